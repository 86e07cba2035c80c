"""TensorFlow SavedModel folders → ONNX through tf2onnx (extra ``tf``).

The ``serving_default`` signature is converted; outputs keep the signature's names. Parity
runs the SavedModel's own signature function on the sample.

Imports: base, torch (sample helpers); tensorflow and tf2onnx inside the function.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard._utils.imports import optional_import
from shipyard.convert.base import ConversionRequest, ConversionResult, finish, quiet
from shipyard.convert.torch import named_sample, task_schema
from shipyard.errors import ConversionError, InvalidData, UnsupportedModel

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["convert_tensorflow"]

_SIGNATURE = "serving_default"


def convert_tensorflow(
    source: object, request: ConversionRequest
) -> ConversionResult:  # pragma: no cover - needs the tf extra
    """Convert a SavedModel folder (``saved_model.pb`` inside).

    Raises:
        MissingDependency: tensorflow or tf2onnx is not installed (extra ``tf``).
        InvalidData: the folder is not a SavedModel.
        ConversionError: tf2onnx failed.
        ParityCheckFailed: ONNX outputs differ beyond tolerance.
    """
    tf = optional_import("tensorflow", extra="tf")
    tf2onnx = optional_import("tf2onnx", extra="tf")
    import numpy as np

    if not isinstance(source, str | Path) or not (Path(source) / "saved_model.pb").is_file():
        raise UnsupportedModel(
            f"A TensorFlow model must be a SavedModel folder. Got {source!r}.",
            hint="Save it with tf.saved_model.save(model, folder).",
        )
    try:
        loaded = tf.saved_model.load(str(source))
        fn = loaded.signatures[_SIGNATURE]
    except (OSError, KeyError, ValueError) as exc:
        raise InvalidData(
            f"Cannot load SavedModel signature {_SIGNATURE!r} from {source}."
        ) from exc
    specs = fn.structured_input_signature[1]
    names = list(specs)
    if request.sample_input is not None:
        given = request.sample_input
        if not isinstance(given, Mapping) and len(names) == 1:
            given = {names[0]: given}
        sample = named_sample(given, what="tensorflow")
    else:
        rng = np.random.default_rng(0)
        sample = {
            n: rng.normal(size=[2 if d is None else d for d in specs[n].shape]).astype(
                specs[n].dtype.as_numpy_dtype
            )
            for n in names
        }
    input_signature = [tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n) for n in names]
    path = request.workdir / "tf-export.onnx"
    request.workdir.mkdir(parents=True, exist_ok=True)
    try:
        with quiet():
            onx, _ = tf2onnx.convert.from_function(
                fn, input_signature=input_signature, opset=request.opset, output_path=str(path)
            )
    except Exception as exc:  # tf2onnx raises many unrelated types
        raise ConversionError(f"tf2onnx failed on {source}: {str(exc).splitlines()[0]}") from exc
    finally:
        path.unlink(missing_ok=True)
    out_names = [o.name for o in onx.graph.output]

    def reference(inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        result = fn(**{n: tf.constant(inputs[n]) for n in names})
        return {k: np.asarray(v) for k, v in result.items() if k in out_names}

    return finish(
        onx,
        request,
        framework="tensorflow",
        framework_version=str(tf.__version__),
        task=task_schema(request, out_names),
        reference=reference,
        sample=sample,
        sample_source="user" if request.sample_input is not None else "generated",
    )

"""check_runtime: the conformance suite every Runtime implementation must pass.

Like scikit-learn's ``check_estimator``: hand it a factory of fresh runtimes and it drives
one through the whole lifecycle on a tiny ONNX model, raising ``AssertionError`` with a
precise message at the first broken rule.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import InvalidInputError, ModelNotReady, SignatureMismatch
from shipyard.spec import DType, FileEntry, ModelManifest, Signature, TaskSchema, TensorSpec

if TYPE_CHECKING:
    from shipyard.runtime.base import Runtime

__all__ = ["check_runtime", "make_tiny_manifest"]

N_FEATURES = 4
N_OUTPUTS = 2


def make_tiny_manifest(
    n_features: int = N_FEATURES,
    n_outputs: int = N_OUTPUTS,
    *,
    name: str = "tiny",
    version: int = 1,
    task: TaskSchema | None = None,
) -> ModelManifest:
    """The manifest of :func:`~shipyard.testing.make_tiny_onnx_model`: ``x`` (N, F) → ``y``."""
    return ModelManifest(
        name=name,
        version=version,
        signature=Signature(
            inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, n_features)),),
            outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, n_outputs)),),
        ),
        task=task or TaskSchema(),
        framework="onnx",
        files={"model.onnx": FileEntry(sha256="0" * 64, size_bytes=0, filename="model.onnx")},
        created_at=datetime.now(UTC),
    )


def _fail(rule: str) -> None:
    raise AssertionError(f"check_runtime: {rule}")


def _expect(exc_type: type[Exception], rule: str, call: Callable[[], object]) -> Exception:
    try:
        call()
    except exc_type as exc:
        return exc
    except Exception as exc:  # the wrong error is a failure too
        raise AssertionError(
            f"check_runtime: {rule}: expected {exc_type.__name__}, got {type(exc).__name__}: {exc}"
        ) from exc
    raise AssertionError(f"check_runtime: {rule}: expected {exc_type.__name__}, nothing raised")


def check_runtime(factory: Callable[[], Runtime]) -> None:
    """Run the Runtime conformance suite on fresh runtimes from ``factory``.

    Checks, in order: a new runtime is not ready and refuses ``predict`` with
    ModelNotReady; it loads the tiny model from bytes, becomes ready and exposes the
    manifest's signature; ``predict`` returns every output by default, a subset on request,
    with the signature's dtype and batch size; float64 inputs are cast safely; missing,
    unknown, wrongly shaped, wrongly ranked and string inputs and unknown output names raise
    SignatureMismatch (which is also a ValueError); concurrent ``predict`` calls work;
    ``unload`` makes it not ready, is idempotent, and ``predict`` then raises
    ModelNotReady; a second runtime loads the same model from a file path.

    Args:
        factory: Builds a new, unloaded runtime on each call.

    Raises:
        AssertionError: naming the first rule the runtime breaks.

    Example:
        >>> check_runtime(lambda: OnnxRuntime())   # doctest: +SKIP
    """
    import numpy as np

    from shipyard.testing import make_tiny_onnx_model

    model = make_tiny_onnx_model(N_FEATURES, N_OUTPUTS)
    data = model.SerializeToString()
    manifest = make_tiny_manifest()
    x = np.random.default_rng(0).normal(size=(3, N_FEATURES)).astype(np.float32)

    rt = factory()
    if rt.ready:
        _fail("a new runtime must not be ready before load()")
    _expect(ModelNotReady, "predict() before load()", lambda: rt.predict({"x": x}))

    rt.load(data, manifest)
    if not rt.ready:
        _fail("a runtime must be ready after load()")
    if rt.signature != manifest.signature:
        _fail(f"signature must be the manifest's after load(); got {rt.signature!r}")

    out = rt.predict({"x": x})
    if set(out) != {"y"}:
        _fail(f"predict() must return every output by default; got {sorted(out)}")
    y = out["y"]
    if not isinstance(y, np.ndarray) or y.shape != (3, N_OUTPUTS) or y.dtype != np.float32:
        _fail(f"output 'y' must be a float32 array of shape (3, 2); got {y!r}")
    if set(rt.predict({"x": x}, outputs=["y"])) != {"y"}:
        _fail("predict(outputs=['y']) must return exactly 'y'")
    cast = rt.predict({"x": x.astype(np.float64)})["y"]
    if cast.shape != (3, N_OUTPUTS) or not np.allclose(cast, y, atol=1e-5):
        _fail("float64 input must be cast safely to FP32 and give the same result")

    bad_inputs: list[tuple[str, dict[str, Any]]] = [
        ("a missing input", {}),
        ("an unknown input", {"x": x, "z": x}),
        ("a wrongly named input", {"z": x}),
        ("a wrong static dimension", {"x": np.zeros((2, N_FEATURES + 1), np.float32)}),
        ("a wrong rank", {"x": np.zeros((N_FEATURES,), np.float32)}),
        ("strings for an FP32 input", {"x": np.full((1, N_FEATURES), "a")}),
        ("numeric text for an FP32 input", {"x": np.array([["1"] * N_FEATURES])}),
    ]
    for rule, inputs in bad_inputs:
        err = _expect(SignatureMismatch, f"predict() with {rule}", partial(rt.predict, inputs))
        if not (isinstance(err, InvalidInputError) and isinstance(err, ValueError)):
            _fail("SignatureMismatch must be an InvalidInputError and a ValueError")
        if not str(err):
            _fail(f"the error for {rule} must have a message")
    _expect(
        SignatureMismatch,
        "predict() with an unknown output name",
        lambda: rt.predict({"x": x}, outputs=["nope"]),
    )

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                got = rt.predict({"x": x})["y"]
                if got.shape != (3, N_OUTPUTS):
                    raise AssertionError(f"concurrent predict() gave shape {got.shape}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise AssertionError(f"check_runtime: concurrent predict() failed: {errors[0]!r}")

    rt.unload()
    if rt.ready:
        _fail("a runtime must not be ready after unload()")
    rt.unload()  # idempotent
    _expect(ModelNotReady, "predict() after unload()", lambda: rt.predict({"x": x}))

    with tempfile.TemporaryDirectory(prefix="shipyard-check-runtime-") as tmp:
        path = Path(tmp) / "tiny.onnx"
        path.write_bytes(data)
        second = factory()
        second.load(path, manifest)
        if not second.ready:
            _fail("a runtime must load from a file path")
        again = second.predict({"x": x})["y"]
        if again.shape != (3, N_OUTPUTS):
            _fail("a runtime loaded from a path must predict like one loaded from bytes")
        second.unload()
    rt.load(data, manifest)
    if not rt.ready:
        _fail("a runtime must load again after unload()")
    rt.unload()

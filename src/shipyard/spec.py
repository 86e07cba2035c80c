"""Value objects shared by every layer: refs, dtypes, signatures, task schemas, manifests.

Imports: errors (and pydantic). numpy is imported lazily inside the few methods that need
it, so ``import shipyard.cli`` stays light.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shipyard.errors import InvalidModelRef, InvalidName

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Tensors = Mapping[str, npt.NDArray[Any]]
    """Named arrays: the currency of runtimes, converters and the dataplane."""

__all__ = [
    "DEFAULT_ALIAS",
    "MANIFEST_SCHEMA_VERSION",
    "DType",
    "FileEntry",
    "Lineage",
    "ModelManifest",
    "ModelRef",
    "NewVersion",
    "ParityReport",
    "Signature",
    "TaskSchema",
    "TaskType",
    "TensorSpec",
    "validate_name",
]

MANIFEST_SCHEMA_VERSION = 1
DEFAULT_ALIAS = "default"

_MAX_VERSION = 2**63 - 1  # the largest integer SQLite stores
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
NAME_MAX_LEN = 64


def validate_name(value: str, *, kind: str = "model name") -> str:
    """Check a model or alias name and return it.

    Rules: lower-case letters, digits, ``.``, ``_``, ``-``; starts with a letter or digit;
    at most 64 characters; never ``..``.

    Raises:
        InvalidName: naming the exact rule that was broken.
    """
    if not isinstance(value, str) or not value:
        raise InvalidName(f"A {kind} must be a non-empty string. Got {value!r} instead.")
    if len(value) > NAME_MAX_LEN:
        raise InvalidName(
            f"A {kind} must be at most {NAME_MAX_LEN} characters. "
            f"Got {len(value)} characters instead.",
        )
    if "/" in value or "\\" in value:
        raise InvalidName(
            f"A {kind} must not contain path separators. Got {value!r} instead.",
            hint="Use letters, digits, '.', '_' or '-'.",
        )
    if ".." in value:
        raise InvalidName(f"A {kind} must not contain '..'. Got {value!r} instead.")
    if not _NAME_RE.match(value):
        raise InvalidName(
            f"A {kind} must use only lower-case letters, digits, '.', '_' and '-', "
            f"starting with a letter or digit. Got {value!r} instead.",
            hint=f"Try {re.sub(r'[^a-z0-9._-]+', '-', value.lower()).strip('-._')!r}.",
        )
    return value


@dataclass(frozen=True, slots=True)
class ModelRef:
    """What a user types to name a model: ``name``, ``name:3`` or ``name@prod``.

    Example:
        >>> ModelRef.parse("fraud@prod")
        ModelRef(name='fraud', version=None, alias='prod')
    """

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str | ModelRef) -> ModelRef:
        """Parse a ref string.

        Raises:
            InvalidModelRef: the text is not one of the three forms.
            InvalidName: the name or alias breaks the naming rules.
        """
        if isinstance(text, ModelRef):
            return text
        if not isinstance(text, str) or not text:
            raise InvalidModelRef(
                f"A model ref must be 'name', 'name:VERSION' or 'name@ALIAS'. Got {text!r} instead."
            )
        if ":" in text and "@" in text:
            raise InvalidModelRef(
                f"A model ref takes either ':VERSION' or '@ALIAS', not both. Got {text!r} instead."
            )
        if ":" in text:
            name, _, ver = text.partition(":")
            # ASCII digits only ('²'.isdigit() is True), and a version SQLite can store
            if (
                not (ver.isascii() and ver.isdigit())
                or len(ver) > 19
                or not 1 <= int(ver) <= _MAX_VERSION
            ):
                raise InvalidModelRef(
                    "A version in a ref must be a positive integer below 2**63. "
                    f"Got {ver[:32]!r} in {text[:64]!r} instead.",
                    hint="Versions are numbered 1, 2, 3...; see `shipyard models show NAME`.",
                )
            return cls(validate_name(name), version=int(ver))
        if "@" in text:
            name, _, alias = text.partition("@")
            return cls(validate_name(name), alias=validate_name(alias, kind="alias"))
        return cls(validate_name(text))

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


class DType(str, Enum):
    """Tensor element types, named as in the Open Inference Protocol."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    @property
    def numpy_name(self) -> str:
        """The numpy dtype name (``object`` for BYTES)."""
        return _DTYPE_TO_NUMPY[self]

    def to_numpy(self) -> np.dtype[Any]:
        """The numpy dtype."""
        import numpy as np

        return np.dtype(_DTYPE_TO_NUMPY[self])

    @classmethod
    def from_numpy(cls, dtype: Any) -> DType:
        """Map a numpy dtype (or anything ``np.dtype`` accepts) to a DType.

        Raises:
            InvalidInputError: the dtype has no OIP equivalent.
        """
        import numpy as np

        from shipyard.errors import InvalidInputError

        dt = np.dtype(dtype)
        if dt.kind in ("U", "S", "O"):
            return cls.BYTES
        try:
            return _NUMPY_TO_DTYPE[dt.name]
        except KeyError:
            raise InvalidInputError(
                f"Tensor dtype must be one of {sorted(_NUMPY_TO_DTYPE)}. Got {dt.name!r} instead."
            ) from None

    @classmethod
    def from_onnx(cls, elem_type: int) -> DType:
        """Map an ONNX ``TensorProto`` element type number to a DType.

        Raises:
            InvalidInputError: the element type has no OIP equivalent.
        """
        from shipyard.errors import InvalidInputError

        try:
            return _ONNX_TO_DTYPE[elem_type]
        except KeyError:
            raise InvalidInputError(
                f"ONNX element type must map to an OIP datatype. Got {elem_type} instead."
            ) from None

    @property
    def onnx_type(self) -> str:
        """ONNX Runtime's type string, e.g. ``tensor(float)``."""
        return _DTYPE_TO_ORT[self]


_DTYPE_TO_NUMPY = {
    DType.BOOL: "bool",
    DType.UINT8: "uint8",
    DType.UINT16: "uint16",
    DType.UINT32: "uint32",
    DType.UINT64: "uint64",
    DType.INT8: "int8",
    DType.INT16: "int16",
    DType.INT32: "int32",
    DType.INT64: "int64",
    DType.FP16: "float16",
    DType.FP32: "float32",
    DType.FP64: "float64",
    DType.BYTES: "object",
}
_NUMPY_TO_DTYPE = {v: k for k, v in _DTYPE_TO_NUMPY.items() if k is not DType.BYTES}
# onnx.TensorProto numbering, written out so spec does not import onnx
_ONNX_TO_DTYPE = {
    1: DType.FP32,
    2: DType.UINT8,
    3: DType.INT8,
    4: DType.UINT16,
    5: DType.INT16,
    6: DType.INT32,
    7: DType.INT64,
    8: DType.BYTES,
    9: DType.BOOL,
    10: DType.FP16,
    11: DType.FP64,
    12: DType.UINT32,
    13: DType.UINT64,
}
_DTYPE_TO_ORT = {
    DType.BOOL: "tensor(bool)",
    DType.UINT8: "tensor(uint8)",
    DType.UINT16: "tensor(uint16)",
    DType.UINT32: "tensor(uint32)",
    DType.UINT64: "tensor(uint64)",
    DType.INT8: "tensor(int8)",
    DType.INT16: "tensor(int16)",
    DType.INT32: "tensor(int32)",
    DType.INT64: "tensor(int64)",
    DType.FP16: "tensor(float16)",
    DType.FP32: "tensor(float)",
    DType.FP64: "tensor(double)",
    DType.BYTES: "tensor(string)",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Frozen):
    """One named tensor of a signature; ``None`` in ``shape`` is a dynamic dimension."""

    name: str
    dtype: DType
    shape: tuple[int | None, ...]

    def wire_shape(self) -> list[int]:
        """The shape with dynamic dims as ``-1`` (how OIP metadata writes them)."""
        return [-1 if d is None else d for d in self.shape]


class Signature(_Frozen):
    """A model's inputs and outputs, in order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        """The input named ``name``.

        Raises:
            KeyError: no such input.
        """
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def output(self, name: str) -> TensorSpec:
        """The output named ``name``.

        Raises:
            KeyError: no such output.
        """
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


class TaskType(str, Enum):
    """What a model's outputs mean."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    EMBEDDING = "embedding"
    OTHER = "other"


class TaskSchema(_Frozen):
    """How to read a model's outputs and feed its inputs.

    ``label_output`` holds predicted labels (classifiers that emit them); ``scores_output``
    holds per-class scores or probabilities, shape (N, n_classes), or the regression value.
    ``class_labels[i]`` is the label of score column ``i``. ``feature_names`` gives the
    column order of a tabular model's single 2-D input.
    """

    task: TaskType = TaskType.OTHER
    class_labels: tuple[str | int, ...] | None = None
    label_output: str | None = None
    scores_output: str | None = None
    feature_names: tuple[str, ...] | None = None


class ParityReport(_Frozen):
    """Source model vs ONNX model on the same sample inputs."""

    passed: bool
    atol: float
    rtol: float
    n_samples: int
    max_abs_error: float
    max_rel_error: float
    label_agreement: float | None = None
    per_output: dict[str, dict[str, float]] = Field(default_factory=dict)
    worst: tuple[dict[str, Any], ...] = ()
    """The worst offending elements: output, index, expected, got, abs_error."""
    sample_source: Literal["user", "generated"] = "generated"
    skipped_reason: str | None = None
    """Set when parity could not be checked (for example a plain ONNX file has no source)."""


class Lineage(_Frozen):
    """Where a version came from: its parent and the transformation that made it."""

    parent_version: int | None = None
    transformation: str | None = None
    """For example ``"int8"``; None for a version registered from a source model."""
    parameters: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        """One line: ``"int8 of 3"`` or ``"source"``."""
        if self.parent_version is None:
            return "source"
        return f"{self.transformation or 'derived'} of {self.parent_version}"


class FileEntry(_Frozen):
    """One stored file of a version, addressed by content."""

    sha256: str
    size_bytes: int
    filename: str
    """The file's name as the user would see it (for exports); never used as a path."""


class NewVersion(_Frozen):
    """Everything a converter knows about a model; the registry adds name, version, hashes.

    ``files`` is not here: the caller hands the registry role → local path separately.
    """

    signature: Signature
    task: TaskSchema = TaskSchema()
    framework: str
    framework_version: str | None = None
    opset: int | None = None
    parity: ParityReport | None = None
    lineage: Lineage = Lineage()


class ModelManifest(_Frozen):
    """The immutable record of one version, stored as JSON beside its blobs.

    ``files`` maps a role (``"model.onnx"``, ``"source"``) to its content entry.
    """

    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str
    version: int
    signature: Signature
    task: TaskSchema = TaskSchema()
    framework: str
    framework_version: str | None = None
    opset: int | None = None
    files: dict[str, FileEntry]
    created_at: datetime
    lineage: Lineage = Lineage()
    parity: ParityReport | None = None

    @property
    def ref(self) -> str:
        """``name:version``."""
        return f"{self.name}:{self.version}"

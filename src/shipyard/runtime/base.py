"""The Runtime protocol: the seam between shipyard and an inference engine.

A runtime loads one model version, runs it synchronously (engines such as ONNX Runtime
release the GIL), and unloads it. Third parties implement it and prove it with
:func:`shipyard.testing.check_runtime`.

Imports: spec, errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard.spec import ModelManifest, Signature, Tensors

__all__ = ["Runtime", "RuntimeState"]


class RuntimeState(str, Enum):
    """Where a runtime is in its lifecycle."""

    UNLOADED = "unloaded"
    """Nothing loaded yet, or unloaded: ``predict`` raises ModelNotReady."""
    LOADING = "loading"
    """``load`` is running."""
    READY = "ready"
    """Loaded; ``predict`` may be called from any thread."""
    FAILED = "failed"
    """The last ``load`` failed; ``load`` may be called again."""


@runtime_checkable
class Runtime(Protocol):
    """An inference engine adapter: ``load`` → ``predict`` (many times) → ``unload``.

    ``signature`` is the loaded model's signature (empty before the first load).
    ``predict`` checks input names, dtypes (safe casts only) and ranks/static dims against
    the signature and is safe to call from several threads at once.

    Example:
        >>> rt = OnnxRuntime()                                   # doctest: +SKIP
        >>> rt.load(Path("model.onnx"), manifest)                # doctest: +SKIP
        >>> rt.predict({"x": np.ones((2, 4), np.float32)})["y"]  # doctest: +SKIP
    """

    signature: Signature

    @property
    def ready(self) -> bool:
        """True between a successful ``load`` and ``unload``."""
        ...

    def load(self, model: bytes | Path, manifest: ModelManifest) -> None:
        """Load a model from its serialized bytes or a file.

        Raises:
            RuntimeLoadError: the engine refused the model.
        """
        ...

    def predict(
        self, inputs: Tensors, outputs: Sequence[str] | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        """Run the model on a batch; returns the requested outputs (default: all).

        Raises:
            ModelNotReady: nothing is loaded.
            SignatureMismatch: inputs do not fit the signature.
            InferenceError: the engine failed.
        """
        ...

    def unload(self) -> None:
        """Release the model and its memory; idempotent."""
        ...

"""FakeRuntime: a stand-in engine that echoes inputs, for tests and server benchmarks.

It checks inputs against the manifest's signature exactly as a real runtime does, then
fills every output from the first input (flattened per row, tiled or cut to the output's
width, multiplied by ``scale``). Latency and failures are configurable, so a server can be
measured or broken without a real model.

Imports: runtime.base, runtime._validation, spec, errors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard.errors import InferenceError, InvalidInputError, ModelNotReady
from shipyard.runtime._validation import InputChecker
from shipyard.runtime.base import RuntimeState
from shipyard.spec import DType, Signature

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard.spec import ModelManifest, Tensors, TensorSpec

__all__ = ["FakeRuntime"]


class FakeRuntime:
    """A :class:`~shipyard.runtime.base.Runtime` that needs no engine.

    Args:
        latency_ms: Time each ``predict`` takes (slept through ``sleep``).
        failure_rate: Probability in [0, 1] that a ``predict`` raises InferenceError.
        scale: Factor applied to the echoed values.
        seed: Seed of the failure draws (reproducible runs).
        sleep: How to wait ``latency_ms``; inject a no-op or a fake clock in tests.

    Raises:
        InvalidInputError: ``latency_ms`` is negative or ``failure_rate`` outside [0, 1].

    Example:
        >>> rt = FakeRuntime(latency_ms=5, scale=2.0)          # doctest: +SKIP
        >>> rt.load(b"", manifest)                             # doctest: +SKIP
        >>> rt.predict({"x": np.ones((1, 4), np.float32)})     # doctest: +SKIP
        {'y': array([[2., 2.]], dtype=float32)}
    """

    def __init__(
        self,
        latency_ms: float = 0.0,
        failure_rate: float = 0.0,
        scale: float = 1.0,
        seed: int | None = None,
        *,
        load_s: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if latency_ms < 0:
            raise InvalidInputError(f"latency_ms must be >= 0. Got {latency_ms} instead.")
        if not 0.0 <= failure_rate <= 1.0:
            raise InvalidInputError(
                f"failure_rate must be between 0 and 1. Got {failure_rate} instead."
            )
        self.latency_ms = latency_ms
        self.load_s = load_s
        self.failure_rate = failure_rate
        self.scale = scale
        self.signature = Signature(inputs=(), outputs=())
        self.calls = 0
        """How many times ``predict`` ran (whatever its outcome)."""
        self.loads = 0
        """How many times ``load`` succeeded."""
        self._sleep = sleep
        self._rng = np.random.default_rng(seed)
        self._rng_lock = threading.Lock()
        self._checker: InputChecker | None = None
        self._state = RuntimeState.UNLOADED

    @property
    def ready(self) -> bool:
        """True between :meth:`load` and :meth:`unload`."""
        return self._state is RuntimeState.READY

    def load(self, model: bytes | Path, manifest: ModelManifest) -> None:
        """Take the manifest's signature; the model bytes are not read.

        Raises:
            RuntimeLoadError: never (kept for the protocol).
        """
        if self.load_s:
            self._sleep(self.load_s)  # a slow engine: for hot-swap and readiness tests
        self._checker = InputChecker(manifest.signature)
        self.signature = manifest.signature
        self._state = RuntimeState.READY
        self.loads += 1

    def predict(
        self, inputs: Tensors, outputs: Sequence[str] | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        """Echo the first input into every requested output.

        Raises:
            ModelNotReady: nothing is loaded.
            SignatureMismatch: inputs do not fit the signature.
            InferenceError: a configured random failure.
        """
        checker = self._checker
        if checker is None:
            raise ModelNotReady(
                "The runtime must have a model loaded to predict. It has none.",
                hint="Call load() first.",
            )
        feeds = checker.check(inputs)
        names = checker.check_outputs(outputs)
        self.calls += 1
        if self.latency_ms:
            self._sleep(self.latency_ms / 1000.0)
        if self.failure_rate:
            with self._rng_lock:
                draw = float(self._rng.random())
            if draw < self.failure_rate:
                raise InferenceError("FakeRuntime failed on purpose (failure_rate).")
        source = feeds[self.signature.inputs[0].name]
        return {name: self._fill(self.signature.output(name), source) for name in names}

    def _fill(self, spec: TensorSpec, source: npt.NDArray[Any]) -> npt.NDArray[Any]:
        n = source.shape[0] if source.ndim else 1
        rows = source.reshape(n, -1)
        declared = spec.shape[1:]
        tail: tuple[int, ...]
        if all(d is not None for d in declared):
            tail = tuple(int(d) for d in declared if d is not None)
        elif len(source.shape) == len(spec.shape):
            tail = tuple(source.shape[1:])
        else:
            tail = (rows.shape[1],)
        width = int(np.prod(tail)) if tail else 1
        if spec.dtype is DType.BYTES:
            flat = rows.astype(str).astype(object)
        else:
            flat = rows.astype(np.float64) * self.scale if rows.dtype.kind in "biuf" else rows
        if rows.shape[1] == 0:
            flat = np.zeros((n, 1), dtype=flat.dtype)
        reps = -(-width // flat.shape[1])
        cells = np.tile(flat, (1, reps))[:, :width]
        shaped = cells.reshape((n, *tail)) if spec.shape else cells.reshape(-1)[:1].reshape(())
        if spec.dtype is DType.BYTES:
            return shaped
        return shaped.astype(spec.dtype.to_numpy())

    def unload(self) -> None:
        """Forget the model; idempotent."""
        self._checker = None
        self._state = RuntimeState.UNLOADED

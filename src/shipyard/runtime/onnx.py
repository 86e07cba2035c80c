"""OnnxRuntime: runs ONNX models with ONNX Runtime; the only place its errors are seen.

Session options come from :class:`~shipyard.config.RuntimeSettings`. Inputs are checked by
hand against the manifest's signature before each run, and every ONNX Runtime exception
is translated into :class:`~shipyard.errors.InferenceError` (runs) or
:class:`~shipyard.errors.RuntimeLoadError` (loads), keeping the cause.

Imports: runtime.base, runtime._validation, config, spec, errors, onnxruntime.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.config import RuntimeSettings
from shipyard.errors import (
    CustomOpNotAllowed,
    InferenceError,
    ModelNotReady,
    RuntimeLoadError,
    ShipyardWarning,
    UnsafeArtifact,
)
from shipyard.runtime._validation import InputChecker
from shipyard.runtime.base import RuntimeState
from shipyard.spec import Signature

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard.spec import ModelManifest, Tensors

__all__ = ["OnnxRuntime", "check_model_safety", "expand_providers"]

logger = logging.getLogger(__name__)

_CPU = "CPUExecutionProvider"


_CUDA = "CUDAExecutionProvider"


def expand_providers(wanted: Sequence[str], available: set[str] | frozenset[str]) -> list[str]:
    """``wanted`` with ``auto`` replaced by CUDA (when ``available`` has it) then the CPU."""
    out: list[str] = []
    for name in wanted:
        if name == "auto":
            out.extend([_CUDA, _CPU] if _CUDA in available else [_CPU])
        else:
            out.append(name)
    return out


def _ort_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's pybind exception classes (they share no common base) and RuntimeError."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = [
        obj for obj in vars(state).values() if isinstance(obj, type) and issubclass(obj, Exception)
    ]
    return (*found, RuntimeError)


def check_model_safety(model: bytes, allowed: Sequence[str], where: str) -> None:
    """Refuse a model that needs outside code or outside files before ONNX Runtime sees it.

    - An operator domain outside ``allowed`` means a custom-op library would run native
      code; shipyard registers none, so such models are refused with a clear error.
    - A tensor stored as external data would make ONNX Runtime open a file named inside
      the model (relative to the working directory when loading from bytes, or an absolute
      path): registered artifacts are self-contained (converters inline external data),
      so any external reference is refused.

    Raises:
        CustomOpNotAllowed: a domain (of the model or of a local function) is not allowed.
        UnsafeArtifact: a tensor points at external data.
        RuntimeLoadError: the bytes are not an ONNX model.
    """
    import onnx

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(model)
    except Exception as exc:  # protobuf's DecodeError, without importing protobuf's internals
        raise RuntimeLoadError(
            f"{where} must be a serialized ONNX model. It could not be parsed: {exc}"
        ) from exc
    used = {op.domain for op in proto.opset_import}
    for fn in proto.functions:
        used.update(op.domain for op in fn.opset_import)
    # a model-local function's domain is defined by the model itself out of ONNX ops
    # (torch's exporter emits these): no external code implements it
    local = {fn.domain for fn in proto.functions}
    refused = sorted(used - local - set(allowed))
    external = [t.name for t in proto.graph.initializer if t.data_location == t.EXTERNAL]
    external += [
        node.name or node.op_type
        for node in proto.graph.node
        for attr in node.attribute
        if attr.HasField("t") and attr.t.data_location == attr.t.EXTERNAL
    ]
    if external:
        raise UnsafeArtifact(
            f"Model {where} must be self-contained to be loaded. Got tensors with external "
            f"data instead: {external[:5]}.",
            hint="Register the model through `shipyard models register`, which inlines "
            "external data that stays inside the model's folder.",
        )
    if refused:
        raise CustomOpNotAllowed(
            f"Model {where} must use only operator domains {sorted(allowed)}. "
            f"Got {refused} instead.",
            hint="Add the domain to SHIPYARD_RUNTIME__ALLOWED_OP_DOMAINS only if you "
            "trust the custom-op library that implements it.",
            details={"domains": refused},
        )


class OnnxRuntime:
    """A :class:`~shipyard.runtime.base.Runtime` backed by an ``onnxruntime.InferenceSession``.

    Args:
        settings: Threads, graph optimization and execution providers (default settings
            when None). Providers that this onnxruntime build lacks are skipped with a
            :class:`~shipyard.errors.ShipyardWarning`; CPU is the fallback.

    Example:
        >>> rt = OnnxRuntime(RuntimeSettings(intra_op_threads=1))   # doctest: +SKIP
        >>> rt.load(onnx_bytes, manifest)                           # doctest: +SKIP
        >>> rt.predict({"x": batch})                                # doctest: +SKIP
    """

    def __init__(self, settings: RuntimeSettings | None = None) -> None:
        self.settings = settings if settings is not None else RuntimeSettings()
        self.signature = Signature(inputs=(), outputs=())
        self._session: Any = None
        self._run: Any = None
        self._checker: InputChecker | None = None
        self._state = RuntimeState.UNLOADED
        self._errors: tuple[type[BaseException], ...] = ()
        self._lock = threading.Lock()
        self._model_ref = ""

    @property
    def ready(self) -> bool:
        """True between a successful :meth:`load` and :meth:`unload`."""
        return self._state is RuntimeState.READY

    @property
    def state(self) -> RuntimeState:
        """The lifecycle state."""
        return self._state

    @property
    def providers(self) -> list[str]:
        """The execution providers of the loaded session, in priority order."""
        session = self._session
        return [] if session is None else list(session.get_providers())

    @property
    def session_options(self) -> Any:
        """The loaded session's ``onnxruntime.SessionOptions`` (None when unloaded)."""
        session = self._session
        return None if session is None else session.get_session_options()

    def _session_options(self) -> Any:
        import onnxruntime as ort

        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.settings.intra_op_threads
        opts.inter_op_num_threads = self.settings.inter_op_threads
        opts.graph_optimization_level = levels[self.settings.graph_optimization]
        if self.settings.inter_op_threads != 1:
            opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        return opts

    def _providers(self) -> list[str]:
        """The providers to ask for: the settings' that this build has (``auto`` expanded)."""
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        wanted = list(dict.fromkeys(expand_providers(self.settings.providers, available)))
        missing = [p for p in wanted if p not in available]
        chosen = [p for p in wanted if p in available]
        if missing:
            warnings.warn(
                f"Execution providers {missing} are not available in this onnxruntime build "
                f"(available: {sorted(available)}); using {chosen or [_CPU]}.",
                ShipyardWarning,
                stacklevel=3,
            )
        return chosen or [_CPU]

    def load(self, model: bytes | Path, manifest: ModelManifest) -> None:
        """Build an inference session from ONNX bytes or a file path.

        Loading again replaces the previous model.

        Args:
            model: The serialized model, or the path of an ``.onnx`` file.
            manifest: The version's manifest; its signature is what ``predict`` checks.

        Raises:
            RuntimeLoadError: the file is missing, ONNX Runtime refuses the model, or the
                model's inputs do not match the manifest's signature.
            CustomOpNotAllowed: the model uses an operator domain that is not allowed.
            UnsafeArtifact: the model points at external data files.
        """
        import onnxruntime as ort

        with self._lock:
            self._state = RuntimeState.LOADING
            started = time.perf_counter()
            source: bytes | str = model if isinstance(model, bytes) else str(model)
            if not isinstance(model, bytes) and not Path(model).is_file():
                self._state = RuntimeState.FAILED
                raise RuntimeLoadError(f"Model file {str(model)!r} must exist. It was not found.")
            try:
                raw = model if isinstance(model, bytes) else Path(model).read_bytes()
                check_model_safety(raw, self.settings.allowed_op_domains, manifest.ref)
            except (UnsafeArtifact, RuntimeLoadError):
                self._state = RuntimeState.FAILED
                raise
            errors = _ort_errors()
            try:
                session = ort.InferenceSession(
                    source, sess_options=self._session_options(), providers=self._providers()
                )
            except errors as exc:
                self._state = RuntimeState.FAILED
                raise RuntimeLoadError(
                    f"ONNX Runtime must be able to load {manifest.ref}. It failed: {exc}",
                    hint="Check the file with `python -m onnx.checker` or re-register it.",
                ) from exc
            engine_inputs = {i.name for i in session.get_inputs()}
            declared = {s.name for s in manifest.signature.inputs}
            if declared != engine_inputs:
                self._state = RuntimeState.FAILED
                raise RuntimeLoadError(
                    f"The manifest of {manifest.ref} must name the model's inputs "
                    f"{sorted(engine_inputs)}. Got {sorted(declared)} instead."
                )
            self._errors = errors
            self._checker = InputChecker(manifest.signature)
            self.signature = manifest.signature
            self._session = session
            # On CPU alone, call the binding directly: the Python wrapper re-validates the
            # names our checker already validated (about 1.5 us a call) and only adds a
            # retry on another provider, which a CPU-only session does not have.
            binding = getattr(session, "_sess", None)
            cpu_only = session.get_providers() == ["CPUExecutionProvider"]
            self._run = binding.run if cpu_only and binding is not None else session.run
            self._model_ref = manifest.ref
            self._state = RuntimeState.READY
        logger.info(
            "Loaded %s into ONNX Runtime in %.1f ms (providers=%s)",
            manifest.ref,
            (time.perf_counter() - started) * 1000,
            session.get_providers(),
        )

    def predict(
        self, inputs: Tensors, outputs: Sequence[str] | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        """Run the model on one batch.

        Args:
            inputs: Arrays by input name; safe dtype casts (float64 → float32, int → float)
                are applied, others refused.
            outputs: Output names to compute; all when None.

        Returns:
            Arrays by output name.

        Raises:
            ModelNotReady: nothing is loaded.
            SignatureMismatch: names, dtypes or shapes do not fit the signature.
            InferenceError: ONNX Runtime failed.
        """
        run, checker = self._run, self._checker
        if run is None or checker is None:
            raise ModelNotReady(
                "The runtime must have a model loaded to predict. It has none.",
                hint="Call load() first.",
            )
        feeds = checker.check(inputs)
        names = checker.check_outputs(outputs)
        try:
            results = run(names, feeds, None)
        except self._errors as exc:
            raise InferenceError(f"ONNX Runtime failed to run {self._model_ref}: {exc}") from exc
        return dict(zip(names, results, strict=True))

    def unload(self) -> None:
        """Drop the session so its memory is released; idempotent."""
        with self._lock:
            was_loaded = self._session is not None
            self._session = None
            self._run = None
            self._checker = None
            self._state = RuntimeState.UNLOADED
        if was_loaded:
            logger.info("Unloaded %s from ONNX Runtime", self._model_ref)

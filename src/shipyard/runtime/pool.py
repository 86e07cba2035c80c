"""ModelPool: the model versions loaded in memory, keyed by (name, version).

The only module of ``runtime/`` that touches the registry: it resolves refs to versions,
reads their artifacts (sha256-verified, into memory), builds a runtime per version, warms
it, and enforces the memory budget. Methods are synchronous and thread-safe; the server
calls them from an executor so the event loop never blocks on a load.

Imports: registry, runtime.base, runtime.onnx, config, spec, errors.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.config import RuntimeSettings, layered
from shipyard.errors import (
    ArtifactCorrupted,
    CapacityExceeded,
    ModelNotReady,
    RuntimeLoadError,
    ShipyardError,
    UnsafeArtifact,
)
from shipyard.spec import DType, ModelManifest, ModelRef

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard.registry import ModelRegistry
    from shipyard.runtime.base import Runtime

__all__ = ["LoadedModel", "ModelPool", "warmup_inputs"]

logger = logging.getLogger(__name__)

RuntimeFactory = Callable[[RuntimeSettings], "Runtime"]


@dataclass(eq=False)
class LoadedModel:
    """One loaded, warmed version and its bookkeeping."""

    name: str
    version: int
    manifest: ModelManifest
    runtime: Runtime
    size_bytes: int
    load_seconds: float
    serving: dict[str, Any] = field(default_factory=dict)
    """The version's serving settings from the registry (e.g. tuned batching)."""
    loaded_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str, int]:
        """``(name, version)``."""
        return (self.name, self.version)


def warmup_inputs(manifest: ModelManifest) -> dict[str, npt.NDArray[Any]]:
    """Zeros shaped by the signature (dynamic dims become 1), to warm a fresh session."""
    import numpy as np

    out: dict[str, npt.NDArray[Any]] = {}
    for spec in manifest.signature.inputs:
        shape = tuple(1 if d is None else d for d in spec.shape)
        if spec.dtype is DType.BYTES:
            out[spec.name] = np.full(shape, "", dtype=object)
        else:
            out[spec.name] = np.zeros(shape, dtype=spec.dtype.to_numpy())
    return out


def _default_factory(settings: RuntimeSettings) -> Runtime:
    from shipyard.runtime.onnx import OnnxRuntime

    return OnnxRuntime(settings)


class ModelPool:
    """Loaded model versions, with a memory budget and least-recently-used eviction.

    Args:
        registry: Where versions are resolved and read from.
        runtime_settings: Passed to each new runtime.
        memory_budget_bytes: Most artifact bytes loaded at once (None: no limit).
        evict_idle: When a load would exceed the budget, unload least recently used
            versions that ``is_idle`` allows, instead of refusing the load.
        runtime_factory: Builds a runtime (default: ONNX Runtime).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        runtime_settings: RuntimeSettings | None = None,
        *,
        memory_budget_bytes: int | None = None,
        evict_idle: bool = False,
        runtime_factory: RuntimeFactory | None = None,
        is_idle: Callable[[tuple[str, int]], bool] | None = None,
    ) -> None:
        self.registry = registry
        self.runtime_settings = runtime_settings or RuntimeSettings()
        self.memory_budget_bytes = memory_budget_bytes
        self.evict_idle = evict_idle
        self._factory = runtime_factory or _default_factory
        self._is_idle = is_idle or (lambda key: True)
        self._models: dict[tuple[str, int], LoadedModel] = {}
        self._lock = threading.RLock()

    def resolve(self, ref: str | ModelRef) -> tuple[str, int]:
        """The (name, version) a ref names now (a bare name is its ``default`` alias)."""
        mv = self.registry.get(ref)
        return (mv.name, mv.version)

    def get(self, name: str, version: int) -> LoadedModel | None:
        """The loaded version, or None."""
        return self._models.get((name, version))

    def loaded(self) -> list[LoadedModel]:
        """Every loaded version."""
        with self._lock:
            return list(self._models.values())

    @property
    def used_bytes(self) -> int:
        """Artifact bytes of every loaded version."""
        return sum(m.size_bytes for m in self._models.values())

    def load(
        self, ref: str | ModelRef, runtime_overrides: dict[str, Any] | None = None
    ) -> LoadedModel:
        """Load (or return the already loaded) version a ref names, warmed and ready.

        Runtime settings are layered: the pool's, then the version's serving settings in
        the registry (``serving["runtime"]``), then ``runtime_overrides`` (a serve config).

        Raises:
            NotFoundError: the ref names nothing.
            ArtifactCorrupted: the artifact's sha256 does not match (nothing is loaded).
            CapacityExceeded: the memory budget would be exceeded.
            RuntimeLoadError: the engine refused the model.
        """
        mv = self.registry.get(ref)
        key = (mv.name, mv.version)
        with self._lock:
            existing = self._models.get(key)
            if existing is not None:
                return existing
            size = mv.manifest.files["model.onnx"].size_bytes
            self._make_room(size, mv.ref)
        started = time.perf_counter()
        data = self.registry.read_artifact(mv)
        runtime = self._factory(
            layered(
                self.runtime_settings,
                dict(mv.serving.get("runtime") or {}),
                runtime_overrides,
                where=mv.ref,
            )
        )
        try:
            runtime.load(data, mv.manifest)
            runtime.predict(warmup_inputs(mv.manifest))
        except (ArtifactCorrupted, RuntimeLoadError, UnsafeArtifact):
            runtime.unload()
            raise
        except ShipyardError as exc:
            runtime.unload()
            raise RuntimeLoadError(
                f"Model {mv.ref} must run on a warm-up input. It failed: {exc.message}",
                hint="Check the model's signature with `shipyard models show`.",
            ) from exc
        del data
        loaded = LoadedModel(
            mv.name,
            mv.version,
            mv.manifest,
            runtime,
            size,
            time.perf_counter() - started,
            serving=dict(mv.serving),
        )
        with self._lock:
            existing = self._models.get(key)
            if existing is not None:  # a concurrent load won the race
                runtime.unload()
                return existing
            self._make_room(size, mv.ref)
            self._models[key] = loaded
        logger.info("Loaded %s in %.1f ms", mv.ref, loaded.load_seconds * 1000)
        return loaded

    def _make_room(self, size: int, ref: str) -> None:
        budget = self.memory_budget_bytes
        if budget is None or self.used_bytes + size <= budget:
            return
        if self.evict_idle:
            for victim in sorted(self._models.values(), key=lambda m: m.last_used):
                if self.used_bytes + size <= budget:
                    break
                if self._is_idle(victim.key):
                    logger.info(
                        "Evicting %s:%s to make room for %s", victim.name, victim.version, ref
                    )
                    self._unload_locked(victim.key)
            if self.used_bytes + size <= budget:
                return
        raise CapacityExceeded(
            f"Loading {ref} ({size} bytes) must fit the memory budget of {budget} bytes. "
            f"{self.used_bytes} bytes are already loaded.",
            hint="Unload a model, or raise SHIPYARD_SERVER__MEMORY_BUDGET_BYTES.",
        )

    def unload(self, name: str, version: int) -> bool:
        """Unload one version; returns whether it was loaded."""
        with self._lock:
            return self._unload_locked((name, version))

    def _unload_locked(self, key: tuple[str, int]) -> bool:
        model = self._models.pop(key, None)
        if model is None:
            return False
        model.runtime.unload()
        gc.collect()
        logger.info("Unloaded %s:%s", key[0], key[1])
        return True

    def require(self, name: str, version: int) -> LoadedModel:
        """The loaded version, or ModelNotReady."""
        model = self._models.get((name, version))
        if model is None:
            raise ModelNotReady(
                f"Model {name}:{version} must be loaded to serve requests. It is not.",
                hint="Load it through the management API.",
            )
        return model

    def close(self) -> None:
        """Unload everything."""
        with self._lock:
            for key in list(self._models):
                self._unload_locked(key)

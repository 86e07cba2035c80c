"""DataPlane: protocol-agnostic request handling that REST, gRPC and TF Serving all call.

It owns the routes (which model version a name answers with), the per-version batchers,
hot swap (load and warm the new version, switch the route, drain and unload the old one),
readiness, and metadata. Endpoints only translate wire formats; no HTTP types here.

Imports: runtime (pool), batching, monitoring, config, spec, errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.batching.batcher import DynamicBatcher
from shipyard.batching.tensors import shape_key, split, stack
from shipyard.config import BatchingSettings, Settings, layered
from shipyard.errors import (
    DeadlineExceeded,
    IntegrityError,
    ModelNotFound,
    ModelNotReady,
    ShipyardError,
    VersionNotFound,
)
from shipyard.logs import request_id_var
from shipyard.monitoring.joined import version_status
from shipyard.monitoring.metrics import ModelMetrics, ServerMetrics
from shipyard.runtime import InputChecker
from shipyard.spec import ModelRef

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard.monitoring.feedback import FeedbackResult, FeedbackStore, LabelledRow
    from shipyard.monitoring.live import LiveQualityTracker
    from shipyard.monitoring.predlog import PredictionLog
    from shipyard.monitoring.watch import StatusCache
    from shipyard.runtime.pool import LoadedModel, ModelPool
    from shipyard.spec import TaskSchema

    Arrays = dict[str, npt.NDArray[Any]]

__all__ = ["DataPlane", "ModelState", "ServedModel"]

logger = logging.getLogger(__name__)

PLATFORM = "onnx_onnxv1"


@dataclass(slots=True)
class ModelState:
    """What the server knows about one configured ref (for readiness and the index)."""

    ref: str
    state: str = "LOADING"  # LOADING | READY | UNAVAILABLE | UNLOADED
    reason: str = ""
    version: int | None = None
    configured: bool = False
    """Named at startup: the server is ready only once it is loaded (until unloaded)."""


class LoggedItem:
    """A request's checked inputs and what the prediction log records about it.

    With the log on, this is what the batcher queues: the batch that runs it is then
    logged as one entry, its inputs and outputs already stacked.
    """

    __slots__ = ("inputs", "key", "request_id", "started")

    def __init__(self, inputs: Arrays, request_id: str, key: str | None, started: float) -> None:
        self.inputs = inputs
        self.request_id = request_id
        self.key = key
        self.started = started


class ServedModel:
    """One loaded version as the server serves it: runtime, batcher, metrics, checks."""

    def __init__(
        self,
        loaded: LoadedModel,
        batching: BatchingSettings,
        metrics: ServerMetrics,
        log: PredictionLog | None = None,
    ) -> None:
        self.loaded = loaded
        self.log = log
        self.name = loaded.name
        self.version = loaded.version
        self.version_str = str(loaded.version)
        self.manifest = loaded.manifest
        self.signature = loaded.manifest.signature
        self.runtime = loaded.runtime
        self.inflight = 0
        self.retired = False
        self._metrics = metrics
        self._by_protocol: dict[str, ModelMetrics] = {}
        self._batch_size = metrics.batch_size.labels(self.name, self.version_str)
        self._checker = InputChecker(self.signature)
        self.output_names = tuple(s.name for s in self.signature.outputs)
        batchable = batching.max_batch_size > 1 and all(
            len(s.shape) >= 1 and s.shape[0] is None
            for s in (*self.signature.inputs, *self.signature.outputs)
        )
        self.batcher: DynamicBatcher[Any, Arrays] | None = (
            DynamicBatcher(
                self._run_batch if log is None else self._run_logged_batch,
                batching,
                on_batch=self._on_batch,
            )
            if batchable
            else None
        )

    def metrics(self, protocol: str) -> ModelMetrics:
        """Bound metric children for a protocol (cached)."""
        found = self._by_protocol.get(protocol)
        if found is None:
            found = self._metrics.for_model(self.name, self.version_str, protocol)
            self._by_protocol[protocol] = found
        return found

    def _on_batch(self, size: int, wait_s: float, run_s: float) -> None:
        self._batch_size.observe(size)

    def check(self, inputs: Arrays) -> Arrays:
        """Validate names, dtypes (safe casts) and shapes against the signature.

        Raises:
            SignatureMismatch: with the expected and received names, dtype or shape.
        """
        return self._checker.check(inputs)

    def run(self, inputs: Arrays) -> Arrays:
        """Run one request inline (no batching)."""
        return self.runtime.predict(inputs)

    def _run_batch(self, items: list[Arrays]) -> list[Arrays]:
        if len(items) == 1:
            return [self.runtime.predict(items[0])]
        merged, offsets = stack(items)
        return split(self.runtime.predict(merged), offsets)

    def _run_logged_batch(self, items: list[LoggedItem]) -> list[Arrays]:
        """Run a batch and queue it for the prediction log as one entry."""
        log = self.log
        assert log is not None
        if len(items) == 1:
            item = items[0]
            outputs = self.runtime.predict(item.inputs)
            latency = time.perf_counter() - item.started
            log.record(
                item.request_id,
                self.name,
                self.version_str,
                item.inputs,
                outputs,
                latency,
                item.key,
            )
            return [outputs]
        merged, offsets = stack([item.inputs for item in items])
        outputs = self.runtime.predict(merged)
        done = time.perf_counter()
        log.record_batch(
            self.name,
            self.version_str,
            [item.request_id for item in items],
            [item.key for item in items],
            [(done - item.started) * 1000 for item in items],
            [b - a for a, b in itertools.pairwise(offsets)],
            merged,
            outputs,
        )
        return split(outputs, offsets)


def _batch_item(model: ServedModel, inputs: Arrays, key: str | None) -> tuple[Any, Hashable]:
    """What a batching model's batcher queues for one request, and its shape key.

    The inputs are checked before queueing, so a bad request fails alone with its own
    shapes; with the log on, the item carries what the batch that runs it records
    (ServedModel._run_logged_batch).
    """
    checked = model.check(inputs)
    if model.log is None:
        return checked, shape_key(checked)
    request_id = request_id_var.get() or _fallback_request_id()
    return LoggedItem(checked, request_id, key, time.perf_counter()), shape_key(checked)


class _Hold:
    """Counts a request as in flight on a served model.

    A plain class: cheaper than a generator-based context manager on the hot path.
    """

    __slots__ = ("model",)

    def __init__(self, model: ServedModel) -> None:
        self.model = model
        model.inflight += 1

    def __enter__(self) -> ServedModel:
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model.inflight -= 1


@dataclass
class _Route:
    ref: str
    key: tuple[str, int]
    pinned: bool  # a ref with an explicit version never moves
    state: ModelState = field(default_factory=lambda: ModelState(ref=""))


class DataPlane:
    """Routes requests to loaded versions; loads, swaps and unloads them.

    A route is named by what a client sends as the model name: the bare model name (the
    first configured ref of that model, usually its ``default`` alias) or the ref text
    itself (``iris@prod``, ``iris:3``). A request that names a version explicitly is served
    by that version if it is loaded.
    """

    def __init__(
        self,
        pool: ModelPool,
        settings: Settings,
        metrics: ServerMetrics | None = None,
        model_settings: Mapping[str, Mapping[str, dict[str, Any]]] | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        # ref -> {"batching": {...}, "runtime": {...}}: per-model overrides from a serve config
        self.model_settings = dict(model_settings or {})
        self.metrics = metrics or ServerMetrics()
        self._served: dict[tuple[str, int], ServedModel] = {}
        self._routes: dict[str, _Route] = {}
        self._states: dict[str, ModelState] = {}
        self._lock = asyncio.Lock()
        self._poll_task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        # monitoring (set by the runner when the prediction log is on)
        self.predlog: PredictionLog | None = None
        self.feedback_store: FeedbackStore | None = None
        self.live: LiveQualityTracker | None = None
        self._watch_cache: StatusCache | None = None

    # ---- lookup (hot path: sync, dictionary lookups only) -------------------------------

    def lookup(self, name: str, version: str | None = None) -> ServedModel:
        """The served version for a model name (and optional version string).

        Raises:
            ModelNotFound: no route of that name.
            VersionNotFound: the version is not loaded.
            ModelNotReady: the model is configured but not (yet) loaded.
        """
        if version:
            base = name.split("@", 1)[0].split(":", 1)[0]
            try:
                key = (base, int(version))
            except ValueError:
                raise VersionNotFound(
                    f"A version must be a positive integer. Got {version!r} instead."
                ) from None
            served = self._served.get(key)
            if served is None or served.retired:
                if base not in self._names():
                    raise self._unknown(base)
                raise VersionNotFound(
                    f"Version {version} of model {base!r} must be loaded to serve it. It is not.",
                    hint=f"Loaded versions: {self.versions(base)}; load others through the "
                    "management API (POST /v2/repository/models/NAME/load).",
                )
            return served
        route = self._routes.get(name)
        if route is None:
            state = self._states.get(name)
            if state is not None:
                raise ModelNotReady(
                    f"Model {name!r} must be loaded to serve requests. It is {state.state}"
                    + (f": {state.reason}" if state.reason else "."),
                )
            raise self._unknown(name)
        served = self._served.get(route.key)
        if served is None:  # pragma: no cover - a route always points at a served version
            raise ModelNotReady(f"Model {name!r} must be loaded to serve requests. It is not.")
        return served

    def _names(self) -> set[str]:
        return {key[0] for key in self._served}

    def _unknown(self, name: str) -> ModelNotFound:
        served = sorted(self._routes)
        return ModelNotFound(
            f"Model {name!r} must be one the server serves. It is not.",
            hint=f"Served models: {', '.join(served) or 'none'}.",
        )

    def versions(self, name: str) -> list[str]:
        """Loaded versions of a model, as strings."""
        return sorted(
            (str(v) for (n, v), s in self._served.items() if n == name and not s.retired), key=int
        )

    # ---- inference ----------------------------------------------------------------------

    def infer(
        self,
        model: ServedModel,
        inputs: Arrays,
        *,
        deadline: float | None = None,
        key: str | None = None,
    ) -> Awaitable[Arrays]:
        """Run one request through the model's batcher (or inline when it cannot batch).

        Returns an awaitable of the outputs; a request that fails its checks raises at
        once. (A plain function handing back the batcher's coroutine: one coroutine frame
        less to suspend and resume on every request.)

        ``deadline`` is on the batcher's clock (monotonic seconds). With the prediction
        log on, the request is recorded (under the context's request id and the client's
        ``key``, if any) once it has been answered.

        Raises:
            SignatureMismatch: inputs do not fit the signature.
            Overloaded: the model's queue is full.
            DeadlineExceeded: the deadline passed before the request ran.
            InferenceError: the engine failed.
        """
        batcher = model.batcher
        if batcher is None:
            return self._inline(model, inputs, deadline, key)
        item, shape = _batch_item(model, inputs, key)
        return batcher.submit(item, deadline=deadline, key=shape)

    def infer_now(
        self,
        model: ServedModel,
        inputs: Arrays,
        *,
        deadline: float | None = None,
        key: str | None = None,
    ) -> Arrays | asyncio.Future[Arrays]:
        """As :meth:`infer`, with no coroutine: the outputs, or the future of them.

        A model that does not batch runs at once and its outputs come back as a dict. A
        batching model's request is queued with ``submit_soon``: its batch runs at the end
        of this loop turn with the requests parsed in the same turn, and a future of its
        outputs comes back (no task per request).
        """
        batcher = model.batcher
        if batcher is None:
            return self.run_inline(model, inputs, deadline, key)
        item, shape = _batch_item(model, inputs, key)
        return batcher.submit_soon(item, deadline=deadline, key=shape)

    async def _inline(
        self, model: ServedModel, inputs: Arrays, deadline: float | None, key: str | None
    ) -> Arrays:
        return self.run_inline(model, inputs, deadline, key)

    def run_inline(
        self, model: ServedModel, inputs: Arrays, deadline: float | None, key: str | None
    ) -> Arrays:
        """Run one request now, on this thread, and log it when the log is on.

        Raises:
            DeadlineExceeded, SignatureMismatch, InferenceError: as :meth:`infer`.
        """
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceeded("The request's deadline passed before it could run.")
        log = model.log
        if log is None:
            # the runtime validates what it runs; checking here too would do it twice
            return model.run(inputs)
        started = time.perf_counter()
        checked = model.check(inputs)
        outputs = model.run(checked)
        log.record(
            request_id_var.get() or _fallback_request_id(),
            model.name,
            model.version_str,
            checked,
            outputs,
            time.perf_counter() - started,
            key,
        )
        return outputs

    async def monitoring(self, name: str, window: int = 1000) -> dict[str, Any]:
        """Per served version: rows logged and labelled, live quality, offline metrics.

        Live quality is computed over every labelled row and over the last ``window``,
        and given for the live-quality windows (``monitoring.quality_windows``, by time and
        by count), beside the offline metrics stored in the registry.

        Raises:
            ModelNotFound: no such model is served.
        """
        base = _model_of(name)
        served = {v: s for (n, v), s in self._served.items() if n == base and not s.retired}
        if not served:
            raise self._unknown(name)
        store = self.feedback_store
        counts = await asyncio.to_thread(store.counts, base) if store is not None else {}
        versions: dict[str, Any] = {}
        for version, model in sorted(served.items()):
            v = str(version)
            rows = await asyncio.to_thread(store.labelled, base, v) if store is not None else []
            offline: dict[str, Any] = {}
            with contextlib.suppress(ShipyardError):
                mv = await asyncio.to_thread(self.pool.registry.get, f"{base}:{version}")
                offline = dict(mv.metrics)
            watched = await self._watch(base, v, model.manifest.task, rows)
            live = self.live
            windows = None if live is None else await asyncio.to_thread(live.windows_of, base, v)
            versions[v] = version_status(
                model.manifest.task,
                counts.get(v, {}),
                rows,
                offline,
                window,
                **watched,
                windows=windows,
            )
        log = self.predlog
        return {
            "model": base,
            "prediction_log": None
            if log is None
            else {"dropped": log.dropped, "rows_written": log.written_rows},
            "versions": versions,
        }

    async def _watch(
        self, model: str, version: str, task: TaskSchema, rows: Sequence[LabelledRow]
    ) -> dict[str, Any]:
        """``drift`` and ``estimated`` of a version's newest logged rows (in a thread, cached).

        Computed off the event loop, at most once per ``monitoring.drift_cache_s`` per
        version; the prediction log is flushed first, so the window holds what was served.
        """
        from shipyard.monitoring import watch

        mon = self.settings.monitoring
        if self._watch_cache is None:
            self._watch_cache = watch.StatusCache(mon.drift_cache_s)
        log = self.predlog
        root = log.root if log is not None else self.settings.monitoring_dir
        keys = log.keys if log is not None else None

        def compute() -> dict[str, Any]:
            try:
                if log is not None:
                    log.flush()
                latest = watch.read_latest(root, model, version, mon.drift_window, keys)
            except ShipyardError as exc:
                failed = {"error": str(exc), "code": exc.code}
                return {"drift": {"reference": None, **failed}, "estimated": failed}
            thresholds = watch.thresholds_from(mon)
            return {
                "drift": watch.drift_section(root, model, version, latest, thresholds=thresholds),
                "estimated": watch.estimated_section(task, latest, rows[-mon.drift_window :]),
            }

        cache = self._watch_cache
        result: dict[str, Any] = await asyncio.to_thread(cache.get, (model, version), compute)
        return result

    async def feedback(self, name: str, items: Sequence[Any]) -> FeedbackResult:
        """Join labels to logged predictions of model ``name`` (a route or model name).

        Labels for rows still in the log's memory are joined too: on a miss the log is
        flushed once and the lookup retried.

        Raises:
            ModelNotFound: no such model is served.
            ModelNotReady: the prediction log is off.
        """
        base = _model_of(name)
        if base not in self._names() and name not in self._routes:
            raise self._unknown(name)
        log, store = self.predlog, self.feedback_store
        if log is None or store is None:
            raise ModelNotReady(
                "The prediction log must be on to accept feedback. It is off.",
                hint="Set SHIPYARD_MONITORING__LOG_PREDICTIONS=true.",
            )
        live = self.live

        def add(batch: Sequence[Any]) -> FeedbackResult:
            joined = store.add_labels(base, batch)
            if live is not None and joined.joined:  # live quality, stamped with prediction times
                live.feed(base, joined.joined)
            return joined

        result = await asyncio.to_thread(add, items)
        if result.unknown:
            await asyncio.to_thread(log.flush)
            missing = {u["index"] for u in result.unknown}
            retry = await asyncio.to_thread(add, [i for i in items if i.index in missing])
            result.unknown = retry.unknown
            result.joined.extend(retry.joined)
            result.accepted = len(result.joined)
        return result

    def acquire(self, name: str, version: str | None = None) -> _Hold:
        """Look up a model and hold it for one request (``with dataplane.acquire(...) as m:``).

        The version a request looked up stays loaded until the request is done, even if an
        alias moves meanwhile: lookup and hold happen in one step, with no await between.

        Raises:
            ModelNotFound, VersionNotFound, ModelNotReady: as :meth:`lookup`.
        """
        return _Hold(self.lookup(name, version))

    # ---- metadata and readiness ---------------------------------------------------------

    def ready(self) -> bool:
        """True when every ref configured at startup is loaded (or was unloaded since).

        A load or unload through the management API changes that model's readiness, not
        the server's: an operator's unload is intended, and a failed management load is
        reported on the model's own endpoints.
        """
        return all(s.state in ("READY", "UNLOADED") for s in self._states.values() if s.configured)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """True when the named model (version) can serve requests now."""
        try:
            self.lookup(name, version)
        except ShipyardError:
            return False
        return True

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        """OIP model metadata (`$metadata_model_response`)."""
        served = self.lookup(name, version)
        sig = served.signature
        return {
            "name": name.split("@", 1)[0].split(":", 1)[0] if version else name,
            "versions": self.versions(served.name),
            "platform": PLATFORM,
            "inputs": [
                {"name": t.name, "datatype": t.dtype.value, "shape": t.wire_shape()}
                for t in sig.inputs
            ],
            "outputs": [
                {"name": t.name, "datatype": t.dtype.value, "shape": t.wire_shape()}
                for t in sig.outputs
            ],
        }

    def index(self) -> list[dict[str, str]]:
        """The model repository index: every configured ref and loaded version with state."""
        rows: list[dict[str, str]] = []
        for state in self._states.values():
            rows.append(
                {
                    "name": ModelRef.parse(state.ref).name if _parses(state.ref) else state.ref,
                    "version": "" if state.version is None else str(state.version),
                    "state": state.state,
                    "reason": state.reason,
                }
            )
        return rows

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self, refs: Sequence[str]) -> None:
        """Load every ref (concurrently); a failure is recorded and does not stop the rest."""
        for ref in refs:
            self._states.setdefault(_route_name(ref), ModelState(ref=ref)).configured = True
        await asyncio.gather(*(self.load(ref) for ref in refs), return_exceptions=True)
        interval = self.settings.server.registry_poll_s
        if interval > 0 and self._poll_task is None:
            self._poll_task = asyncio.create_task(self._poll(interval))

    async def load(self, ref: str) -> ModelState:
        """Load a ref and route its name to it; never raises for a failed load (see state)."""
        route_name = _route_name(ref)
        state = self._states.setdefault(route_name, ModelState(ref=ref))
        state.ref = ref
        try:
            parsed = ModelRef.parse(ref)
            overrides = self.model_settings.get(ref, {})
            loaded = await asyncio.to_thread(self.pool.load, ref, overrides.get("runtime"))
        except ShipyardError as exc:
            state.state, state.reason = "UNAVAILABLE", f"{exc.code}: {exc.message}"
            logger.error("Could not load %s: %s", ref, exc.message)
            if isinstance(exc, IntegrityError):  # sha256 mismatch or undecryptable blob
                failed = str(exc.details.get("ref") or ref)
                version = failed.rpartition(":")[2] if ":" in failed else ""
                self.metrics.integrity_failures.labels(route_name, version).inc()
            raise
        except Exception as exc:  # a bug in an engine: report it, keep serving the others
            state.state, state.reason = "UNAVAILABLE", f"internal: {type(exc).__name__}"
            logger.exception("Could not load %s", ref)
            raise
        await self._install(route_name, ref, loaded, pinned=parsed.version is not None)
        await self._seed_live(loaded)
        state.state, state.reason, state.version = "READY", "", loaded.version
        return state

    async def _seed_live(self, loaded: LoadedModel) -> None:
        """Give a newly loaded version its live quality, seeded from the stored labels."""
        live, store = self.live, self.feedback_store
        name, version = loaded.key[0], str(loaded.key[1])
        if live is None or store is None or live.get(name, version) is not None:
            return
        try:
            n = await asyncio.to_thread(live.seed, store, name, version, loaded.manifest.task)
        except Exception as exc:  # live quality must not stop a model from serving
            logger.warning("Could not seed live quality of %s:%s: %s", name, version, exc)
            return
        if n:
            logger.info("Live quality of %s:%s seeded with %d labelled rows", name, version, n)

    async def _install(self, route_name: str, ref: str, loaded: LoadedModel, pinned: bool) -> None:
        async with self._lock:
            key = loaded.key
            served = self._served.get(key)
            if served is None or served.retired:
                batching = layered(
                    self.settings.batching,
                    dict(loaded.serving.get("batching") or {}),
                    self.model_settings.get(ref, {}).get("batching"),
                    where=ref,
                )
                served = ServedModel(loaded, batching, self.metrics, self.predlog)
                if served.batcher is not None:
                    await served.batcher.start()
                self._served[key] = served
                self.metrics.loaded.labels(key[0], str(key[1])).set(1)
                self.metrics.load_seconds.labels(key[0], str(key[1])).observe(loaded.load_seconds)
            old = self._routes.get(route_name)
            self._routes[route_name] = _Route(ref=ref, key=key, pinned=pinned)
            # the bare model name follows its first configured ref
            base = key[0]
            if base != route_name and (base not in self._routes or self._routes[base].ref == ref):
                self._routes[base] = self._routes[route_name]
            if old is not None and old.key != key:
                logger.info("Route %s: %s:%s -> %s:%s", route_name, *old.key, *key)
                self._maybe_retire(old.key)

    def _maybe_retire(self, key: tuple[str, int]) -> None:
        if any(r.key == key for r in self._routes.values()):
            return
        served = self._served.get(key)
        if served is None:
            return
        served.retired = True
        task = asyncio.create_task(self._retire(served))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, served: ServedModel) -> None:
        deadline = time.monotonic() + self.settings.server.drain_timeout_s
        while served.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if served.batcher is not None:
            await served.batcher.aclose()
        if self._served.get(served.loaded.key) is served:
            del self._served[served.loaded.key]
        await asyncio.to_thread(self.pool.unload, served.name, served.version)
        self.metrics.loaded.labels(served.name, served.version_str).set(0)

    async def unload(self, name: str) -> None:
        """Stop serving a route (or every route of a model) and unload what it pointed at.

        Raises:
            ModelNotFound: nothing of that name is served.
        """
        async with self._lock:
            names = [n for n, r in self._routes.items() if n == name or r.key[0] == name]
            if not names and name not in self._states:
                raise self._unknown(name)
            keys = {self._routes[n].key for n in names}
            for n in names:
                del self._routes[n]
            for n in [n for n in self._states if n == name or _model_of(n) == name]:
                self._states[n].state = "UNLOADED"
                self._states[n].reason = "unloaded through the management API"
            for key in keys:
                self._maybe_retire(key)
        await asyncio.gather(*list(self._retiring))

    async def refresh(self) -> None:
        """Re-resolve every alias route; load, warm and switch to versions that moved."""
        for route_name, route in list(self._routes.items()):
            if route.pinned or route_name != _route_name(route.ref):
                continue
            try:
                target = await asyncio.to_thread(self.pool.resolve, route.ref)
            except ShipyardError as exc:
                logger.warning("Could not resolve %s: %s", route.ref, exc.message)
                continue
            if target != route.key:
                logger.info("Alias %s moved to version %s; loading it", route.ref, target[1])
                with contextlib.suppress(ShipyardError):
                    await self.load(route.ref)

    async def _poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:  # the poller must survive anything; it is logged
                logger.exception("Registry poll failed")

    async def aclose(self) -> None:
        """Stop polling, drain every batcher, unload everything."""
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
            self._poll_task = None
        for served in list(self._served.values()):
            if served.batcher is not None:
                await served.batcher.aclose()
        await asyncio.gather(*list(self._retiring))
        self._served.clear()
        self._routes.clear()
        await asyncio.to_thread(self.pool.close)


def _fallback_request_id() -> str:
    import uuid

    return uuid.uuid4().hex


def _parses(ref: str) -> bool:
    try:
        ModelRef.parse(ref)
    except ShipyardError:
        return False
    return True


def _model_of(route_name: str) -> str:
    return route_name.split("@", 1)[0].split(":", 1)[0]


def _route_name(ref: str) -> str:
    """The name clients use for a ref: the bare name for `name`, else the ref text."""
    return ref

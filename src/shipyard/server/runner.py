"""Run the server: public REST, management REST and gRPC listeners in one process and loop.

SIGTERM or SIGINT drains: listeners stop accepting, in-flight requests finish within
``drain_timeout_s``, batchers drain, models unload, and the process exits 0.

Imports: L0-L4, uvicorn, the server's own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import uvicorn

from shipyard.config import Settings
from shipyard.errors import ConfigError
from shipyard.monitoring.metrics import ServerMetrics
from shipyard.server import _monitoring
from shipyard.server._http import limited_http_protocol
from shipyard.server.app import create_app, create_management_app, fast_route
from shipyard.server.dataplane import DataPlane

if TYPE_CHECKING:
    from shipyard.monitoring.predlog import PredictionLog
    from shipyard.registry import ModelRegistry
    from shipyard.runtime.pool import RuntimeFactory

__all__ = ["BackgroundServer", "run_server", "serve_async"]

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us (several servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _uvicorn_config(app: Any, host: str, port: int, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        http=limited_http_protocol(
            settings.server.max_header_bytes,
            settings.server.client_timeout_s,
            fast=fast_route(app),  # the public app's infer route, answered without ASGI
        ),
        lifespan="off",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.server.drain_timeout_s) or None,
        timeout_keep_alive=settings.server.keep_alive_s,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=64 * 1024,
        **_tls_kwargs(settings),
    )


def _tls_kwargs(settings: Settings) -> dict[str, Any]:
    """The uvicorn TLS arguments from ``settings.security`` (empty when TLS is off)."""
    sec = settings.security
    if sec.tls_cert is None or sec.tls_key is None:
        return {}
    import ssl

    out: dict[str, Any] = {"ssl_certfile": str(sec.tls_cert), "ssl_keyfile": str(sec.tls_key)}
    if sec.tls_client_ca is not None:
        out.update(ssl_ca_certs=str(sec.tls_client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return out


def _start_prediction_log(
    dataplane: DataPlane, settings: Settings, metrics: ServerMetrics
) -> PredictionLog | None:
    """Attach the prediction log and the feedback store to the dataplane, when on."""
    if not settings.monitoring.log_predictions:
        return None
    from shipyard.monitoring.feedback import FeedbackStore
    from shipyard.monitoring.predlog import PredictionLog, keys_for

    keys = keys_for(settings)  # before anything starts: a missing key fails the start
    # The log's writer thread shares the GIL with the event loop. At the default 5 ms
    # switch interval a busy writer can hold a request that long; 0.5 ms bounds that.
    sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
    root = settings.monitoring_dir
    store = FeedbackStore.open(root, keys=keys)
    log = PredictionLog(
        root, settings.monitoring, store=store, on_drop=metrics.predlog_dropped.inc, keys=keys
    ).start()
    dataplane.predlog, dataplane.feedback_store = log, store
    return log


async def serve_async(
    refs: Sequence[str],
    settings: Settings,
    *,
    registry: ModelRegistry | None = None,
    ready_event: asyncio.Event | None = None,
    stop_event: asyncio.Event | None = None,
    runtime_factory: RuntimeFactory | None = None,
    model_settings: Mapping[str, Mapping[str, dict[str, Any]]] | None = None,
) -> None:
    """Load ``refs`` and serve until SIGTERM/SIGINT, or until ``stop_event`` is set."""
    from shipyard.registry import ModelRegistry
    from shipyard.runtime.pool import ModelPool

    started = time.perf_counter()
    # bad monitoring settings fail the start before anything runs
    alerts_config = _monitoring.load_alerts(settings)
    tracker = _monitoring.live_quality_tracker(settings)
    reg = registry or ModelRegistry.open(settings)
    metrics = ServerMetrics()
    pool = ModelPool(
        reg,
        settings.runtime,
        memory_budget_bytes=settings.server.memory_budget_bytes,
        runtime_factory=runtime_factory,
    )
    dataplane = DataPlane(pool, settings, metrics, model_settings)
    predlog = _start_prediction_log(dataplane, settings, metrics)
    if tracker is not None and dataplane.feedback_store is not None:
        dataplane.live = tracker
        metrics.watch_quality(tracker.snapshots)
    await dataplane.start(refs)  # seeds each version's live quality from stored labels
    s = settings.server
    servers: list[_Server] = []
    if s.port:
        servers.append(
            _Server(_uvicorn_config(create_app(dataplane, settings), s.host, s.port, settings))
        )
    if s.management_port:
        servers.append(
            _Server(
                _uvicorn_config(
                    create_management_app(dataplane, settings),
                    s.management_host,
                    s.management_port,
                    settings,
                )
            )
        )
    grpc_server = None
    if s.grpc_port:
        from shipyard.server.grpc_service import start_grpc_server

        grpc_server = await start_grpc_server(dataplane, settings)

    loop = asyncio.get_running_loop()
    stop = stop_event or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    tasks = [asyncio.create_task(srv.serve()) for srv in servers]
    while not all(srv.started for srv in servers):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.01)
    for t in tasks:
        if t.done() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    logger.info(
        "Serving %s on http://%s:%s (gRPC %s, management http://%s:%s) after %.0f ms",
        ", ".join(refs) or "no models",
        s.host,
        s.port,
        s.grpc_port or "off",
        s.management_host,
        s.management_port or "off",
        (time.perf_counter() - started) * 1000,
    )
    alerts = (
        None
        if alerts_config is None
        else _monitoring.start_alerts(alerts_config, dataplane, metrics, tracker)
    )
    # What startup built (modules, models, settings) lives as long as the server: out of
    # the collector's sight, a full collection no longer walks it. Under load a full
    # collection had cost ~30 ms each, and a logged request ~2 µs of collections.
    gc.freeze()
    if ready_event is not None:
        ready_event.set()
    try:
        await stop.wait()
        logger.info("Shutting down: draining in-flight requests")
    finally:
        for srv in servers:
            srv.should_exit = True
        if alerts is not None:
            await asyncio.to_thread(alerts.stop, min(settings.server.drain_timeout_s, 5.0))
        if grpc_server is not None:
            await grpc_server.stop(settings.server.drain_timeout_s)
        await asyncio.gather(*tasks, return_exceptions=True)
        await dataplane.aclose()
        if predlog is not None:
            await asyncio.to_thread(predlog.close)
            if dataplane.feedback_store is not None:
                dataplane.feedback_store.close()
        if registry is None:
            reg.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        logger.info("Stopped")


def run_server(
    refs: Sequence[str],
    settings: Settings,
    model_settings: Mapping[str, Mapping[str, dict[str, Any]]] | None = None,
) -> None:
    """Serve in a fresh event loop (uvloop when installed) until a signal arrives."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a default dependency on Linux
        runner = asyncio.run
    runner(serve_async(refs, settings, model_settings=model_settings))


class BackgroundServer:
    """A server on its own thread and event loop: for notebooks, demos and tests.

    Example:
        >>> with BackgroundServer(["iris"], settings) as srv:       # doctest: +SKIP
        ...     httpx.post(srv.url + "/v2/models/iris/infer", json=body)
    """

    def __init__(
        self,
        refs: Sequence[str],
        settings: Settings,
        *,
        start_timeout_s: float = 60.0,
        model_settings: Mapping[str, Mapping[str, dict[str, Any]]] | None = None,
    ) -> None:
        self.refs = list(refs)
        self.settings = settings
        self.model_settings = model_settings
        self.start_timeout_s = start_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL of the public REST listener."""
        s = self.settings.server
        return f"http://{s.host}:{s.port}"

    def start(self) -> BackgroundServer:
        """Start serving; returns once the listeners accept connections.

        Raises:
            ConfigError: the server failed to start (for example, a port in use).
        """
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def main() -> None:
            self._stop = asyncio.Event()
            started = asyncio.Event()
            waiter = asyncio.create_task(started.wait())
            waiter.add_done_callback(lambda _: ready.set())
            try:
                await serve_async(
                    self.refs,
                    self.settings,
                    ready_event=started,
                    stop_event=self._stop,
                    model_settings=self.model_settings,
                )
            except BaseException as exc:  # surfaced to the starting thread
                self._error = exc
                ready.set()
            finally:
                waiter.cancel()

        self._thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        self._thread.start()
        if not ready.wait(self.start_timeout_s) or self._error is not None:
            self.stop()
            raise ConfigError(f"The server must start. It did not: {self._error!r}")
        return self

    def stop(self) -> None:
        """Drain and stop; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            if self._stop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._stop.set)
            thread.join(self.settings.server.drain_timeout_s + 10)
            if not thread.is_alive():
                loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

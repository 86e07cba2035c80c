"""create_app: the public ASGI app (inference) and the management app (load/unload).

The V2 infer route is the hot path and is served by a pure-ASGI handler
(:class:`InferenceApp`): the path is split by hand, the body read once with its size
checked against ``Content-Length`` first, decoded with orjson/numpy, run, and encoded —
no router, no Request object, no per-request pydantic. Everything else (health, metadata,
metrics, TF Serving REST, repository) goes through a Starlette route table, listed in one
place below.

Imports: L0-L4, starlette.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shipyard._utils.version import __version__
from shipyard.config import ServerSettings, Settings
from shipyard.errors import (
    InvalidData,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    ShipyardError,
)
from shipyard.logs import request_id_var, trace_id_from_traceparent, trace_id_var
from shipyard.monitoring.metrics import CONTENT_TYPE_LATEST
from shipyard.server import codec
from shipyard.server._auth import AuthMiddleware, auth_enabled, make_authenticator, refusal
from shipyard.server._http import Reply
from shipyard.server._json import loads
from shipyard.server.dataplane import DataPlane, ServedModel
from shipyard.server.errors import body_too_large, error_body
from shipyard.server.tfserving import tfserving_routes
from shipyard.spec import ModelRef

if TYPE_CHECKING:
    from shipyard.security import Authenticator

__all__ = [
    "InferCall",
    "InferenceApp",
    "Later",
    "Reply",
    "create_app",
    "create_management_app",
    "fast_route",
]

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("shipyard.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SERVER_NAME = "shipyard"
EXTENSIONS = ["binary_tensor_data", "model_repository"]
JSON_HEADERS = [(b"content-type", b"application/json")]
TIMEOUT_HEADER = b"x-request-timeout-ms"


_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)


def _new_request_id() -> str:
    """Unique per process run: a random prefix and a counter (no syscall per request)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


def _json(status: int, payload: Any, request_id: str | None = None) -> Response:
    headers = {"x-request-id": request_id} if request_id else None
    return Response(orjson.dumps(payload), status, headers=headers, media_type="application/json")


def _error_response(exc: BaseException, request_id: str) -> Response:
    status, body, headers = error_body(exc, request_id)
    resp = Response(body, status, media_type="application/json")
    for key, value in headers:
        resp.headers[key.decode()] = value.decode()
    resp.headers["x-request-id"] = request_id
    return resp


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body of a Starlette request, refused with 413 past ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"A request body must be at most {limit} bytes. Got {declared} instead.",
            hint="Raise SHIPYARD_SERVER__MAX_BODY_BYTES or split the request.",
        )
    return await _read_body(request.receive, limit)


Arrays = dict[str, Any]

_INFER_PREFIX = b"/v2/models/"
_INFER_SUFFIX = b"/infer"


class Later:
    """An answer that waits for its batch.

    It holds the batcher's future, and ``finish``, which makes the answer once the future
    is settled (called once; it never raises).

    The HTTP fast path adds ``finish`` as the future's callback; the ASGI path awaits it.
    """

    __slots__ = ("finish", "future")

    def __init__(
        self, future: asyncio.Future[Arrays], finish: Callable[[asyncio.Future[Arrays]], Reply]
    ) -> None:
        self.future = future
        self.finish = finish

    def __await__(self) -> Generator[Any, None, Reply]:
        try:
            yield from self.future
        except asyncio.CancelledError:
            if not self.future.cancelled():
                raise  # pragma: no cover - cancelled on its own: the future is cancelled too
        except Exception:
            pass
        return self.finish(self.future)


class InferCall:
    """One V2 REST infer request, from its head to its answer.

    Shared by the two ways a request reaches :class:`InferenceApp`: through ASGI, and
    through the HTTP protocol's fast path (``_http.py``), which skips the ASGI
    scope, task and message dicts for this one route.
    """

    __slots__ = (
        "_tokens",
        "authorization",
        "content_length",
        "header_length",
        "path",
        "request_id",
        "started",
        "status",
        "timeout_ms",
        "trace_id",
    )

    def __init__(self, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = time.perf_counter()
        self.path = path
        self.status = 499  # the client went away before an answer
        request_id = ""
        self.content_length = -1
        self.header_length: int | None = None
        self.timeout_ms: float | None = None
        self.trace_id: str | None = None
        self.authorization: str | None = None
        for key, value in headers:
            if key == b"content-length":
                self.content_length = int(value) if value.isdigit() else -1
            elif key == b"inference-header-content-length":
                self.header_length = int(value) if value.isdigit() else -2
            elif key == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
            elif key == b"traceparent":
                self.trace_id = trace_id_from_traceparent(value.decode("latin-1"))
            elif key == TIMEOUT_HEADER:
                try:
                    self.timeout_ms = float(value)
                except ValueError:
                    self.timeout_ms = None
            elif key == b"authorization":
                self.authorization = value.decode("latin-1")
        self.request_id = request_id or _new_request_id()
        self._tokens: tuple[Any, Any] | None = None

    def bind(self) -> None:
        """Set the request and trace ids for the logs of this context."""
        trace = trace_id_var.set(self.trace_id) if self.trace_id else None
        self._tokens = (request_id_var.set(self.request_id), trace)

    def unbind(self) -> None:
        if self._tokens is not None:
            token, trace = self._tokens
            request_id_var.reset(token)
            if trace is not None:
                trace_id_var.reset(trace)
            self._tokens = None


class InferenceApp:
    """Pure-ASGI front for the hot path.

    Serves ``POST /v2/models/{name}[/versions/{v}]/infer`` itself and hands every other
    request to ``fallback``. The same requests can also be answered without ASGI, by
    the HTTP protocol (``_http.py``): :meth:`accepts`, :class:`InferCall`,
    :meth:`admit`, :meth:`answer` and :meth:`finish` are that protocol's side.
    """

    def __init__(self, dataplane: DataPlane, settings: ServerSettings, fallback: ASGIApp) -> None:
        self.dataplane = dataplane
        self.settings = settings
        self.fallback = fallback
        self.limits = codec.DecodeLimits.from_settings(settings)
        self.max_body = settings.max_body_bytes
        self.authenticator: Authenticator | None = None
        """Token checks of the fast path (the ASGI path has AuthMiddleware for that)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith("/v2/models/") and path.endswith("/infer"):
                await self.infer(scope, receive, send, path)
                return
        await self.fallback(scope, receive, send)

    @staticmethod
    def call(path: str, headers: list[tuple[bytes, bytes]]) -> InferCall:
        """A call for the request with this path and (lower-case) headers."""
        return InferCall(path, headers)

    @staticmethod
    def accepts(target: bytes) -> bool:
        """Whether a POST to this raw request target is an infer call (no query, no escapes)."""
        return (
            target.startswith(_INFER_PREFIX)
            and target.endswith(_INFER_SUFFIX)
            and b"%" not in target
            and target.isascii()
        )

    async def infer(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """The V2 REST infer handler (ASGI)."""
        call = InferCall(path, scope["headers"])
        call.bind()
        try:
            reply = self.refuse_early(call)
            if reply is None:
                try:
                    body = await _read_body(receive, self.max_body)
                except ConnectionAbortedError:
                    return
                except PayloadTooLarge as exc:
                    reply = self.failed(call, exc)
                else:
                    answer = self.answer(call, body)
                    reply = answer if isinstance(answer, tuple) else await answer
            status, headers, payload = reply
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        *headers,
                        (b"content-length", str(len(payload)).encode()),
                        (b"x-request-id", call.request_id.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            call.status = status
        finally:
            self.finish(call, scope.get("client"))
            call.unbind()

    def admit(self, call: InferCall, client: tuple[str, int] | None) -> Reply | None:
        """The fast path's checks before the body is read: the refusal, or None.

        The token is checked first (when auth is on, as AuthMiddleware does on the ASGI
        path), then the declared body size.
        """
        auth = self.authenticator
        if auth is not None:
            try:
                auth.authenticate(call.authorization, "infer", client[0] if client else "")
            except ShipyardError as exc:
                return refusal(exc, call.request_id)
        return self.refuse_early(call)

    def refuse_early(self, call: InferCall) -> Reply | None:
        """The 413 answer when the declared body is too large (before it is read)."""
        if call.content_length <= self.max_body:
            return None
        return self.failed(call, body_too_large(self.max_body, call.content_length))

    def answer(self, call: InferCall, body: bytes) -> Reply | Later:
        """Decode, run and encode one request whose body has arrived.

        Returns the answer, or a :class:`Later` when the request waits for its batch.
        Never raises: an error becomes its error answer.
        """
        path = call.path
        try:
            parts = path[11:-6].split("/")
            if len(parts) == 1 and parts[0]:
                model = self.dataplane.lookup(parts[0])
            elif len(parts) == 3 and parts[1] == "versions":
                model = self.dataplane.lookup(parts[0], parts[2])
            else:
                raise ModelNotFound(f"Path {path!r} must name a model. It does not.")
        except Exception as exc:
            return self.failed(call, exc)
        model.inflight += 1  # the version stays loaded until the answer is out
        handed_on = False
        try:
            request = codec.decode_infer_request(
                body, header_length=call.header_length, limits=self.limits
            )
            outputs = self.dataplane.infer_now(
                model, request.tensors(), deadline=request.deadline(call.timeout_ms), key=request.id
            )
            if not isinstance(outputs, dict):
                handed_on = True  # the Later holds the version from here
                return Later(
                    outputs, functools.partial(self._settled, call, model, request, parts[0])
                )
            return self._encoded(call, model, request, outputs, parts[0])
        except Exception as exc:
            return self.failed(call, exc, model)
        finally:
            if not handed_on:
                model.inflight -= 1

    def _settled(
        self,
        call: InferCall,
        model: ServedModel,
        request: codec.InferRequest,
        name: str,
        future: asyncio.Future[Arrays],
    ) -> Reply:
        try:
            if future.cancelled():
                raise ModelNotReady(
                    "The request must run before the server stops. The server stopped first.",
                    hint="Retry against a running server.",
                )
            return self._encoded(call, model, request, future.result(), name)
        except Exception as exc:
            return self.failed(call, exc, model)
        finally:
            model.inflight -= 1

    def _encoded(
        self,
        call: InferCall,
        model: ServedModel,
        request: codec.InferRequest,
        outputs: Arrays,
        name: str,
    ) -> Reply:
        payload, headers = codec.encode_infer_response(
            request, outputs, model_name=name, model_version=model.version_str
        )
        bound = model.metrics("rest")
        bound.requests.inc()
        bound.latency.observe(time.perf_counter() - call.started)
        return 200, headers, payload

    def failed(
        self, call: InferCall, exc: BaseException, model: ServedModel | None = None
    ) -> Reply:
        """The error answer for ``exc`` (counted against ``model`` when there is one)."""
        status, payload, headers = error_body(exc, call.request_id)
        if model is not None:
            code = exc.code if isinstance(exc, ShipyardError) else "internal"
            self.dataplane.metrics.error(model.name, model.version_str, "rest", code)
        return status, [*JSON_HEADERS, *headers], payload

    def finish(self, call: InferCall, client: tuple[str, int] | None) -> None:
        """The access-log line of an answered (or abandoned) call."""
        if not access_logger.disabled and access_logger.isEnabledFor(logging.INFO):
            # the fast path answers a batched request from a callback: bind its ids here
            token = request_id_var.set(call.request_id)
            trace = trace_id_var.set(call.trace_id or "-")
            try:
                access_logger.info(
                    '%s "POST %s" %d %.2fms',
                    client[0] if client else "-",
                    call.path,
                    call.status,
                    (time.perf_counter() - call.started) * 1000,
                )
            finally:
                trace_id_var.reset(trace)
                request_id_var.reset(token)


def _routes(dataplane: DataPlane) -> list[Route]:
    """THE route table of the public app (besides the V2 infer hot path)."""
    openapi = resources.files("shipyard.server").joinpath("openapi.json").read_bytes()

    async def live(request: Request) -> Response:
        return _json(200, {"live": True})

    async def ready(request: Request) -> Response:
        ok = dataplane.ready()
        return _json(200 if ok else 503, {"ready": ok})

    async def server_metadata(request: Request) -> Response:
        return _json(200, {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(request: Request) -> Response:
        p = request.path_params
        return _json(200, dataplane.model_metadata(p["name"], p.get("version")))

    async def model_ready(request: Request) -> Response:
        p = request.path_params
        name, version = p["name"], p.get("version")
        dataplane.lookup(name, version)  # raises 404/503 with the reason
        return _json(200, {"name": name, "ready": True})

    async def openapi_doc(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    async def metrics(request: Request) -> Response:
        # off the loop: live-quality gauges are computed at scrape time
        body = await asyncio.to_thread(dataplane.metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def feedback(request: Request) -> Response:
        from shipyard.monitoring.feedback import parse_labels

        body = await _read_limited(request, dataplane.settings.server.max_body_bytes)
        items = parse_labels(loads(body, "The feedback body"))
        result = await dataplane.feedback(request.path_params["name"], items)
        return _json(200, result.to_dict())

    async def monitoring(request: Request) -> Response:
        return _json(200, await dataplane.monitoring(request.path_params["name"]))

    return [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/openapi.json", openapi_doc, methods=["GET"]),
        Route("/v2/models/{name}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v2/models/{name}/feedback", feedback, methods=["POST"]),
        Route("/v2/models/{name}/monitoring", monitoring, methods=["GET"]),
        *tfserving_routes(dataplane),
    ]


def _management_routes(dataplane: DataPlane) -> list[Route]:
    """THE route table of the management app (model repository extension)."""

    async def index(request: Request) -> Response:
        body = await _read_limited(request, dataplane.settings.server.max_body_bytes)
        doc = loads(body, "The index body") if body else {}
        if type(doc) is not dict:
            raise InvalidData(f"The index body must be a JSON object. Got {type(doc).__name__}.")
        only_ready = bool(doc.get("ready", False))
        rows = [r for r in dataplane.index() if not only_ready or r["state"] == "READY"]
        return _json(200, rows)

    async def audited(request: Request, action: str, call: Any) -> Response:
        # who/what/when/where of every admin call, in the registry's audit log; the actor
        # is what the auth layer put in scope["shipyard.actor"] (a token's name, never it)
        name = request.path_params["name"]
        client = request.client
        details: dict[str, Any] = {"ok": False}
        try:
            await call(name)
            details["ok"] = True
        except ShipyardError as exc:
            details["code"] = exc.code
            raise
        finally:
            await asyncio.to_thread(
                dataplane.pool.registry.record_audit,
                action,
                name,
                actor=str(request.scope.get("shipyard.actor") or "anonymous"),
                source=f"{client.host}:{client.port}" if client else "unknown",
                details=details,
            )
        return _json(200, {})

    async def load(request: Request) -> Response:
        async def checked(ref: str) -> None:
            ModelRef.parse(ref)  # an invalid ref is refused before the index records it
            await dataplane.load(ref)

        return await audited(request, "server.load", checked)

    async def unload(request: Request) -> Response:
        return await audited(request, "server.unload", dataplane.unload)

    return [
        Route("/v2/repository/index", index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", unload, methods=["POST"]),
    ]


def _starlette(routes: list[Route], dataplane: DataPlane | None = None) -> Starlette:
    async def on_error(request: Request, exc: Exception) -> Response:
        return _error_response(exc, request.headers.get("x-request-id") or _new_request_id())

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return _json(
            status,
            {
                "error": f"{request.method} {request.url.path} is not an endpoint of this server.",
                "code": "not-found" if status == 404 else "method-not-allowed",
            },
        )

    return Starlette(
        routes=routes,
        exception_handlers={
            Exception: on_error,
            ShipyardError: on_error,
            404: not_found,
            405: not_found,
        },
    )


def create_app(dataplane: DataPlane, settings: Settings) -> ASGIApp:
    """The public ASGI app: V2 REST inference, health, metadata, metrics.

    Embed it in an existing ASGI app, or serve it with ``shipyard serve``. The caller owns
    the dataplane's lifecycle (``await dataplane.start(refs)`` / ``aclose()``).
    """
    app = InferenceApp(dataplane, settings.server, _starlette(_routes(dataplane)))
    if not auth_enabled(settings):
        return app
    app.authenticator = authenticator = make_authenticator(settings)
    return AuthMiddleware(app, authenticator, management=False)


def fast_route(app: ASGIApp) -> InferenceApp | None:
    """The InferenceApp of a public app from :func:`create_app`, for the HTTP fast path."""
    inner = app.app if isinstance(app, AuthMiddleware) else app
    return inner if isinstance(inner, InferenceApp) else None


def create_management_app(dataplane: DataPlane, settings: Settings) -> ASGIApp:
    """The management ASGI app: repository index, load, unload (bind it to loopback)."""
    app = _starlette(_management_routes(dataplane) + _routes(dataplane))
    if not auth_enabled(settings):
        return app
    return AuthMiddleware(app, make_authenticator(settings), management=True)

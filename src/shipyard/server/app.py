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
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shipyard._utils.version import __version__
from shipyard.config import ServerSettings, Settings
from shipyard.errors import InvalidData, ModelNotFound, PayloadTooLarge, ShipyardError
from shipyard.logs import request_id_var, trace_id_from_traceparent, trace_id_var
from shipyard.monitoring.metrics import CONTENT_TYPE_LATEST
from shipyard.server import codec
from shipyard.server._auth import AuthMiddleware, auth_enabled, make_authenticator
from shipyard.server._json import loads
from shipyard.server.dataplane import DataPlane
from shipyard.server.errors import error_body
from shipyard.server.tfserving import tfserving_routes
from shipyard.spec import ModelRef

__all__ = ["InferenceApp", "create_app", "create_management_app"]

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
            raise PayloadTooLarge(
                f"A request body must be at most {limit} bytes. Got more than that instead.",
                hint="Raise SHIPYARD_SERVER__MAX_BODY_BYTES or split the batch.",
            )
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


class InferenceApp:
    """Pure-ASGI front for the hot path.

    Serves ``POST /v2/models/{name}[/versions/{v}]/infer`` itself and hands every other
    request to ``fallback``.
    """

    def __init__(self, dataplane: DataPlane, settings: ServerSettings, fallback: ASGIApp) -> None:
        self.dataplane = dataplane
        self.settings = settings
        self.fallback = fallback
        self.limits = codec.DecodeLimits.from_settings(settings)
        self.max_body = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith("/v2/models/") and path.endswith("/infer"):
                await self.infer(scope, receive, send, path)
                return
        await self.fallback(scope, receive, send)

    async def infer(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """The V2 REST infer handler."""
        started = time.perf_counter()
        request_id = ""
        header_length: int | None = None
        content_length = -1
        timeout_ms: float | None = None
        trace_id: str | None = None
        status = 499  # client went away before an answer
        for key, value in scope["headers"]:
            if key == b"content-length":
                content_length = int(value) if value.isdigit() else -1
            elif key == b"inference-header-content-length":
                header_length = int(value) if value.isdigit() else -2
            elif key == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
            elif key == b"traceparent":
                trace_id = trace_id_from_traceparent(value.decode("latin-1"))
            elif key == TIMEOUT_HEADER:
                try:
                    timeout_ms = float(value)
                except ValueError:
                    timeout_ms = None
        if not request_id:
            request_id = _new_request_id()
        token = request_id_var.set(request_id)
        trace_token = trace_id_var.set(trace_id) if trace_id else None
        model = None
        protocol = "rest"
        try:
            if content_length > self.max_body:
                raise PayloadTooLarge(
                    f"A request body must be at most {self.max_body} bytes. "
                    f"Got {content_length} instead.",
                    hint="Raise SHIPYARD_SERVER__MAX_BODY_BYTES or split the batch.",
                )
            parts = path[11:-6].split("/")
            if len(parts) == 1 and parts[0]:
                held = self.dataplane.acquire(parts[0])
            elif len(parts) == 3 and parts[1] == "versions":
                held = self.dataplane.acquire(parts[0], parts[2])
            else:
                raise ModelNotFound(f"Path {path!r} must name a model. It does not.")
            with held as model:
                body = await _read_body(receive, self.max_body)
                request = codec.decode_infer_request(
                    body, header_length=header_length, limits=self.limits
                )
                deadline = request.deadline(timeout_ms)
                outputs = await self.dataplane.infer(
                    model, request.tensors(), deadline=deadline, key=request.id
                )
            payload, headers = codec.encode_infer_response(
                request, outputs, model_name=parts[0], model_version=model.version_str
            )
            bound = model.metrics(protocol)
            bound.requests.inc()
            bound.latency.observe(time.perf_counter() - started)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        *headers,
                        (b"content-length", str(len(payload)).encode()),
                        (b"x-request-id", request_id.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            status = 200
        except ConnectionAbortedError:
            return
        except Exception as exc:
            status, payload, headers = error_body(exc, request_id)
            code = exc.code if isinstance(exc, ShipyardError) else "internal"
            if model is not None:
                self.dataplane.metrics.error(model.name, model.version_str, protocol, code)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        *JSON_HEADERS,
                        *headers,
                        (b"content-length", str(len(payload)).encode()),
                        (b"x-request-id", request_id.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
        finally:
            if not access_logger.disabled and access_logger.isEnabledFor(logging.INFO):
                client = scope.get("client") or ("-", 0)
                access_logger.info(
                    '%s "POST %s" %d %.2fms',
                    client[0],
                    path,
                    status,
                    (time.perf_counter() - started) * 1000,
                )
            request_id_var.reset(token)
            if trace_token is not None:
                trace_id_var.reset(trace_token)


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
    return AuthMiddleware(app, make_authenticator(settings), management=False)


def create_management_app(dataplane: DataPlane, settings: Settings) -> ASGIApp:
    """The management ASGI app: repository index, load, unload (bind it to loopback)."""
    app = _starlette(_management_routes(dataplane) + _routes(dataplane))
    if not auth_enabled(settings):
        return app
    return AuthMiddleware(app, make_authenticator(settings), management=True)

"""Token authentication for the gRPC listener: a server interceptor.

Reads the ``authorization`` metadata (``Bearer shy_...``, as REST). Missing or bad token →
UNAUTHENTICATED, wrong scope → PERMISSION_DENIED, too many failures from one peer →
RESOURCE_EXHAUSTED; the details carry the same stable code and message as the REST body.
ServerLive/ServerReady stay open; ModelInfer/ModelStreamInfer need ``infer``; repository
load/unload need ``admin``; everything else needs ``read``.

Imports: errors, security.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import grpc

from shipyard import errors
from shipyard.security import Authenticator

__all__ = ["AuthInterceptor", "current_actor", "grpc_scope_for"]

# The name of the token that authenticated the RPC running on this thread (the servicer
# records it as the actor of admin calls; a token's name, never the token).
_ACTOR: ContextVar[str | None] = ContextVar("shipyard_grpc_actor", default=None)


def current_actor() -> str | None:
    """The authenticated token's name for the RPC on this thread, or None (auth off)."""
    return _ACTOR.get()


_OPEN = frozenset({"ServerLive", "ServerReady"})
_INFER = frozenset({"ModelInfer", "ModelStreamInfer"})
_ADMIN = frozenset({"RepositoryModelLoad", "RepositoryModelUnload", "RepositoryIndex"})

_STATUS = {
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def grpc_scope_for(method: str) -> str | None:
    """The scope a full gRPC method name needs, or None for the open health calls."""
    name = method.rsplit("/", 1)[-1]
    if name in _OPEN:
        return None
    if name in _INFER:
        return "infer"
    if name in _ADMIN:
        return "admin"
    return "read"


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Authenticates each RPC before its handler runs."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        scope = grpc_scope_for(details.method)
        handler = continuation(details)
        if scope is None or handler is None:
            return handler
        authorization = None
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                authorization = value if isinstance(value, str) else value.decode("latin-1")
                break

        def check(context: Any) -> str:
            peer = context.peer() or ""
            client = peer.rsplit(":", 1)[0]
            try:
                return self.authenticator.authenticate(authorization, scope, client).name
            except errors.ShipyardError as exc:
                code = _STATUS.get(type(exc), grpc.StatusCode.UNAUTHENTICATED)
                context.abort(code, f"{exc.code}: {exc.message}")
                raise  # pragma: no cover - abort raises

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            def unary_unary(request: Any, context: Any) -> Any:
                token = _ACTOR.set(check(context))
                try:
                    return inner_uu(request, context)
                finally:
                    _ACTOR.reset(token)

            return handler._replace(unary_unary=unary_unary)
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            def stream_stream(requests: Any, context: Any) -> Any:
                token = _ACTOR.set(check(context))
                try:
                    return inner_ss(requests, context)
                finally:
                    _ACTOR.reset(token)

            return handler._replace(stream_stream=stream_stream)
        return handler  # pragma: no cover - the V2 service has no other kinds

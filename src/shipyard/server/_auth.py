"""Token authentication for the REST listeners: a pure-ASGI middleware and its route table.

Route → scope: V2 infer and TF Serving predict/classify/regress → ``infer``; feedback →
``feedback``; everything on the management app → ``admin``; the rest (metadata, model
ready, metrics, monitoring) → ``read``. Liveness and readiness (``/v2/health/live``,
``/v2/health/ready``) stay open so orchestrator probes work without a token; they reveal
nothing but up/down.

Auth off costs nothing: ``create_app`` does not wrap the app at all. Auth on costs one
dict lookup per request for a cached token (see ``security.auth``).

Imports: config, errors, security, server.errors.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from typing import Any

from shipyard import errors
from shipyard.config import Settings
from shipyard.security import Authenticator, TokenStore
from shipyard.server.errors import error_body

__all__ = ["AuthMiddleware", "auth_enabled", "make_authenticator", "scope_for"]

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_enabled(settings: Settings) -> bool:
    """Whether tokens are required, logging a loud warning when a public bind is open."""
    mode = settings.security.auth
    public = not is_loopback(settings.server.host)
    if mode == "on" or (mode == "auto" and public):
        return True
    if public:
        logger.warning(
            "AUTHENTICATION IS OFF on a non-loopback address (%s): anyone who can reach "
            "the server can run and manage models. Set security.auth=on.",
            settings.server.host,
        )
    return False


def make_authenticator(settings: Settings) -> Authenticator:
    """An Authenticator over the configured token store."""
    sec = settings.security
    store = TokenStore(sec.token_db or settings.home / "security.db")
    return Authenticator(
        store,
        cache_ttl_s=sec.token_cache_s,
        burst=sec.fail_burst,
        refill_per_s=sec.fail_refill_per_s,
    )


def scope_for(path: str, method: str, management: bool) -> str | None:
    """The scope a request needs, or None for the open probe paths."""
    if management:
        return "admin"
    if path in OPEN_PATHS:
        return None
    if method == "POST":
        if path.endswith("/feedback"):
            return "feedback"
        if path.endswith(("/infer", ":predict", ":classify", ":regress")):
            return "infer"
    return "read"


class AuthMiddleware:
    """Checks ``Authorization: Bearer`` before the wrapped app sees an HTTP request."""

    def __init__(self, app: Any, authenticator: Authenticator, *, management: bool) -> None:
        self.app = app
        self.authenticator = authenticator
        self.management = management

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = scope_for(scope["path"], scope["method"], self.management)
        if needed is None:
            await self.app(scope, receive, send)
            return
        authorization = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
                break
        client = scope.get("client")
        try:
            principal = self.authenticator.authenticate(
                authorization, needed, client[0] if client else ""
            )
        except errors.ShipyardError as exc:
            await _refuse(send, exc)
            return
        scope["shipyard.actor"] = principal.name
        await self.app(scope, receive, send)


def refusal(
    exc: errors.ShipyardError, request_id: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers (no content-length) and body refusing a request that failed auth."""
    status, body, headers = error_body(exc, request_id)
    headers = [*headers, (b"content-type", b"application/json")]
    if isinstance(exc, errors.Unauthenticated):
        headers.append((b"www-authenticate", b'Bearer realm="shipyard"'))
    retry = exc.details.get("retry_after_s") if isinstance(exc, errors.RateLimited) else None
    if retry is not None:
        headers.append((b"retry-after", str(retry).encode()))
    return status, headers, body


async def _refuse(send: Any, exc: errors.ShipyardError) -> None:
    status, headers, body = refusal(exc, secrets.token_hex(8))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

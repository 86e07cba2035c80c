"""The Authenticator: raw ``Authorization`` value + needed scope → Principal, or an error.

* 401 ``Unauthenticated`` for a missing, malformed, unknown, wrong-secret, expired or
  revoked token, with one message whatever the reason (no oracle for guessing ids).
* 403 ``Forbidden`` for a valid token without the scope.
* 429 ``RateLimited`` once a client address has spent its failure budget: a token bucket
  of ``burst`` failures refilled at ``refill_per_s``; ``details['retry_after_s']``.

Verified tokens are cached for ``cache_ttl_s`` (default 1 s): the hot path is one dict
lookup, and a revocation or expiry takes effect within that bound.

Imports: errors, security.tokens.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from shipyard import errors
from shipyard.security.tokens import SCOPES, TokenStore

__all__ = ["UNAUTHENTICATED_MESSAGE", "Authenticator", "Principal"]

UNAUTHENTICATED_MESSAGE = "A valid API token must be sent as 'Authorization: Bearer <token>'."
_HINT = "Create one with: shipyard tokens create NAME --scope infer"


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token id and name, and its scopes."""

    token_id: str
    name: str
    scopes: frozenset[str]


@dataclass
class _Cached:
    principal: Principal
    secret_sha256: str
    expires_at: float | None
    checked_at: float


class Authenticator:
    """Checks tokens against a TokenStore, with a short cache and failure rate limiting."""

    def __init__(
        self,
        store: TokenStore,
        *,
        cache_ttl_s: float = 1.0,
        burst: int = 10,
        refill_per_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cache_ttl_s = cache_ttl_s
        self.burst = burst
        self.refill_per_s = refill_per_s
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._buckets: dict[str, tuple[float, float]] = {}

    def authenticate(self, authorization: str | None, scope: str, client: str = "") -> Principal:
        """The principal of a request needing ``scope``; raise 401/403/429 errors."""
        if scope not in SCOPES:  # pragma: no cover - a programming error in the route table
            raise ValueError(f"unknown scope {scope!r}")
        self._check_budget(client)
        principal = self._principal(authorization)
        if principal is None:
            self._spend(client)
            raise errors.Unauthenticated(UNAUTHENTICATED_MESSAGE, hint=_HINT)
        if scope not in principal.scopes and "admin" not in principal.scopes:
            raise errors.Forbidden(
                f"The token must have the {scope!r} scope. "
                f"Got scopes {sorted(principal.scopes)} instead.",
                hint=f"Create a token with: shipyard tokens create NAME --scope {scope}",
            )
        return principal

    def _principal(self, authorization: str | None) -> Principal | None:
        if not authorization:
            return None
        kind, _, raw = authorization.partition(" ")
        if kind.lower() != "bearer" or not raw:
            return None
        raw = raw.strip()
        now = self._clock()
        cached = self._cache.get(raw)
        if (
            cached is not None
            and now - cached.checked_at < self.cache_ttl_s
            and (cached.expires_at is None or time.time() < cached.expires_at)
        ):
            return cached.principal
        info = self.store.verify(raw)
        if info is None:
            self._cache.pop(raw, None)
            return None
        principal = Principal(info.token_id, info.name, info.scopes)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[raw] = _Cached(principal, info.secret_sha256, info.expires_at, now)
        self.store.touch(info.token_id)
        return principal

    def _refilled(self, client: str) -> float:
        now = self._clock()
        tokens, last = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.refill_per_s)

    def _check_budget(self, client: str) -> None:
        tokens = self._refilled(client)
        if tokens < 1.0:
            retry = max(1, math.ceil((1.0 - tokens) / self.refill_per_s))
            raise errors.RateLimited(
                f"Failed authentications from one client must stay under {self.burst} "
                f"per burst. Got too many from this client instead.",
                hint=f"Retry after {retry} s with a valid token.",
                details={"retry_after_s": retry},
            )

    def _spend(self, client: str) -> None:
        self._buckets[client] = (self._refilled(client) - 1.0, self._clock())
        if len(self._buckets) > 100_000:
            self._buckets.clear()

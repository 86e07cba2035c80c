"""The token store: ``shy_<id>_<secret>`` tokens, kept only as sha256 hashes in SQLite.

The id (8 random bytes, hex) is the lookup key; the secret (32 bytes from ``secrets``,
256 bits) is never stored: only ``sha256(secret)``, compared with ``hmac.compare_digest``.
A fast hash is right here: the secret has full entropy, so there is nothing to brute-force.

The store has its own file, ``<home>/security.db``, not the registry database: tokens
must stay valid when a registry is swapped or shared, and the registry's metadata URL
may point at a database other users can read.

Imports: errors, SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from shipyard import errors

__all__ = ["PREFIX", "SCOPES", "TokenInfo", "TokenStore", "hash_secret", "parse_token"]

#: What each scope grants: infer endpoints, metadata and monitoring, feedback, management.
SCOPES = frozenset({"infer", "read", "feedback", "admin"})
PREFIX = "shy"
_ID_BYTES = 8
_SECRET_BYTES = 32

_meta = sa.MetaData()
_tokens = sa.Table(
    "api_tokens",
    _meta,
    sa.Column("token_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("scopes", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("last_used_at", sa.Float, nullable=True),
)


@dataclass(frozen=True)
class TokenInfo:
    """What the store knows about a token (never its secret)."""

    token_id: str
    name: str
    scopes: frozenset[str]
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    secret_sha256: str = ""

    def active(self, now: float) -> bool:
        """True when the token is neither revoked nor expired at ``now``."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at

    def to_dict(self) -> dict[str, object]:
        """JSON-serializable view for ``shipyard tokens list --json`` (no hash)."""
        return {
            "id": self.token_id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
        }


def hash_secret(secret: str) -> str:
    """Hex sha256 of a token secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(raw: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed ``shy_<id>_<secret>`` token, else None."""
    parts = raw.split("_")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def check_scopes(scopes: list[str] | tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    """Validate scope names; raise InvalidInputError naming the allowed ones."""
    wanted = frozenset(scopes)
    bad = sorted(wanted - SCOPES)
    if bad or not wanted:
        raise errors.InvalidInputError(
            f"Token scopes must be one or more of {sorted(SCOPES)}. Got {sorted(wanted)} instead.",
            hint="Pass --scope infer (repeatable).",
        )
    return wanted


class TokenStore:
    """Create, look up, list and revoke API tokens in an SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._engine = sa.create_engine(f"sqlite:///{self.path}")
        _meta.create_all(self._engine)
        with contextlib.suppress(OSError):  # e.g. a read-only mount
            self.path.chmod(0o600)

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def create(
        self, name: str, scopes: list[str] | tuple[str, ...], *, expires_in_s: float | None = None
    ) -> tuple[str, TokenInfo]:
        """A new token: ``(secret token string, info)``. The string is shown once only."""
        wanted = check_scopes(scopes)
        if expires_in_s is not None and expires_in_s <= 0:
            raise errors.InvalidInputError(
                f"Token expiry must be > 0 seconds. Got {expires_in_s} instead."
            )
        token_id = secrets.token_hex(_ID_BYTES)
        secret = secrets.token_urlsafe(_SECRET_BYTES).replace("_", "-")
        now = time.time()
        info = TokenInfo(
            token_id=token_id,
            name=name,
            scopes=wanted,
            created_at=now,
            expires_at=None if expires_in_s is None else now + expires_in_s,
            revoked_at=None,
            last_used_at=None,
            secret_sha256=hash_secret(secret),
        )
        with self._engine.begin() as conn:
            conn.execute(
                _tokens.insert().values(
                    token_id=token_id,
                    name=name,
                    secret_sha256=info.secret_sha256,
                    scopes=",".join(sorted(wanted)),
                    created_at=now,
                    expires_at=info.expires_at,
                )
            )
        return f"{PREFIX}_{token_id}_{secret}", info

    def get(self, token_id: str) -> TokenInfo | None:
        """The token with this id, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(_tokens.select().where(_tokens.c.token_id == token_id)).first()
        if row is None:
            return None
        return _info(row)

    def list(self) -> list[TokenInfo]:
        """Every token, oldest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(_tokens.select().order_by(_tokens.c.created_at)).all()
        return [_info(r) for r in rows]

    def revoke(self, token_id: str) -> TokenInfo:
        """Mark a token revoked; raise NotFoundError if there is none with that id."""
        with self._engine.begin() as conn:
            result = conn.execute(
                _tokens.update()
                .where(_tokens.c.token_id == token_id, _tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        info = self.get(token_id)
        if info is None or (result.rowcount == 0 and info.revoked_at is None):
            raise errors.NotFoundError(
                f"Token id must name an existing token. Got {token_id!r} instead.",
                hint="List tokens with: shipyard tokens list",
            )
        return info

    def verify(self, raw: str) -> TokenInfo | None:
        """The active token a raw ``shy_...`` string names, or None (any reason)."""
        parsed = parse_token(raw)
        if parsed is None:
            return None
        token_id, secret = parsed
        info = self.get(token_id)
        if info is None:
            return None
        if not hmac.compare_digest(info.secret_sha256, hash_secret(secret)):
            return None
        if not info.active(time.time()):
            return None
        return info

    def touch(self, token_id: str) -> None:
        """Record a use of the token (``last_used_at``)."""
        with self._engine.begin() as conn:
            conn.execute(
                _tokens.update()
                .where(_tokens.c.token_id == token_id)
                .values(last_used_at=time.time())
            )


def _info(row: sa.Row[tuple[object, ...]]) -> TokenInfo:
    m = row._mapping
    return TokenInfo(
        token_id=str(m["token_id"]),
        name=str(m["name"]),
        scopes=frozenset(str(m["scopes"]).split(",")),
        created_at=float(m["created_at"]),
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
        secret_sha256=str(m["secret_sha256"]),
    )

"""The audit log: who changed what in the registry, or called an admin API, when and from where.

One ``audit_events`` row per change, written inside the transaction of the change itself,
so an entry exists exactly when the change committed (a JSONL file beside the database
could hold entries for changes that rolled back, or miss entries after a crash). Rows
are never updated or deleted (SQLite triggers refuse it).

"Where from" comes from :func:`audit_context`: the server's management API wraps each call
in it with the client address (and the token's name as the actor); elsewhere it is
``local``. Details hold names, versions and hashes only: never tokens, keys or payloads.

Imports: metadata, errors.
"""

from __future__ import annotations

import contextvars
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shipyard.registry import metadata as md

__all__ = ["AuditEvent", "audit_context", "current_source", "events", "record"]

_source: contextvars.ContextVar[str | None] = contextvars.ContextVar("audit_source", default=None)
_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar("audit_actor", default=None)

_MAX_TARGET = 256


@dataclass(frozen=True)
class AuditEvent:
    """One audit entry."""

    id: int
    at: datetime
    actor: str
    source: str
    action: str
    target: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "source": self.source,
            "action": self.action,
            "target": self.target,
            "details": self.details,
        }


@contextmanager
def audit_context(*, source: str | None = None, actor: str | None = None) -> Iterator[None]:
    """Attribute registry changes made inside the block to ``actor`` from ``source``.

    Example:
        >>> with audit_context(source="10.0.0.7:51234", actor="token:deploy-bot"):  # doctest: +SKIP
        ...     registry.promote("iris:3", "prod")
    """
    t_source = _source.set(source)
    t_actor = _actor.set(actor)
    try:
        yield
    finally:
        _source.reset(t_source)
        _actor.reset(t_actor)


def current_source() -> str:
    """Where the current change comes from: the audit context's, else ``local:<host>``."""
    return _source.get() or f"local:{socket.gethostname()}"


def context_actor() -> str | None:
    """The actor the audit context names, if any (it wins over the OS user)."""
    return _actor.get()


def record(
    conn: Connection,
    action: str,
    target: str,
    actor: str,
    details: Mapping[str, Any] | None = None,
    *,
    source: str | None = None,
) -> None:
    """Append one entry in the caller's transaction."""
    conn.execute(
        md.audit_events.insert().values(
            at=md.now_iso(),
            actor=actor[:128],
            source=(source or current_source())[:256],
            action=action,
            target=target[:_MAX_TARGET],
            details=dict(details or {}),
        )
    )


def events(
    conn: Connection,
    *,
    target: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[AuditEvent]:
    """Entries oldest first, optionally filtered (``target`` matches a model name prefix)."""
    c = md.audit_events.c
    stmt = sa.select(c.id, c.at, c.actor, c.source, c.action, c.target, c.details)
    if target is not None:
        stmt = stmt.where(
            sa.or_(
                c.target == target,
                c.target.startswith(f"{target}:"),
                c.target.startswith(f"{target}@"),
            )
        )
    if action is not None:
        stmt = stmt.where(c.action == action)
    if since is not None:
        stmt = stmt.where(c.at >= since.isoformat(timespec="microseconds"))
    if limit is not None:
        inner = stmt.order_by(c.id.desc()).limit(limit).subquery()
        stmt = sa.select(inner).order_by(inner.c.id)
    else:
        stmt = stmt.order_by(c.id)
    return [
        AuditEvent(
            id=row.id,
            at=datetime.fromisoformat(row.at),
            actor=row.actor,
            source=row.source,
            action=row.action,
            target=row.target,
            details=dict(row.details or {}),
        )
        for row in conn.execute(stmt)
    ]

"""The metadata database: SQLAlchemy tables, engine set-up, schema version and migrations.

The one source of truth for what exists. Any SQLAlchemy URL works above this module; the
SQLite specifics (WAL, busy timeout, ``BEGIN IMMEDIATE`` for writers so two processes
never both pick the same version number) live only in :func:`create_engine`.

Imports: errors (and SQLAlchemy).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from shipyard.errors import ConfigError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "alias_history",
    "aliases",
    "audit_events",
    "create_engine",
    "metadata",
    "metadata_events",
    "migrate",
    "models",
    "now_iso",
    "read_schema_version",
    "schema_info",
    "version_files",
    "versions",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2

metadata = sa.MetaData()

schema_info = sa.Table(
    "schema_info",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("last_version", sa.Integer, nullable=False, default=0),  # never reused
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
)

versions = sa.Table(
    "versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("manifest_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("tags", sa.JSON, nullable=False, default=dict),
    sa.Column("metrics", sa.JSON, nullable=False, default=dict),
    sa.Column("serving", sa.JSON, nullable=False, default=dict),
    sa.UniqueConstraint("model_id", "version", name="uq_model_version"),
)

version_files = sa.Table(
    "version_files",
    metadata,
    sa.Column(
        "version_id", sa.Integer, sa.ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("role", sa.String(64), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
)

aliases = sa.Table(
    "aliases",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
)

alias_history = sa.Table(
    "alias_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("old_version", sa.Integer, nullable=True),
    sa.Column("new_version", sa.Integer, nullable=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
)

metadata_events = sa.Table(
    "metadata_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("field", sa.String(32), nullable=False),
    sa.Column("old", sa.JSON, nullable=True),
    sa.Column("new", sa.JSON, nullable=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
)


audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(40), nullable=False, index=True),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("source", sa.String(256), nullable=False),
    sa.Column("action", sa.String(64), nullable=False, index=True),
    sa.Column("target", sa.String(256), nullable=False),
    sa.Column("details", sa.JSON, nullable=False, default=dict),
)
"""Append-only: written in the same transaction as the change it records; on SQLite,
triggers refuse UPDATE and DELETE of its rows."""

for _verb in ("UPDATE", "DELETE"):
    event.listen(
        audit_events,
        "after_create",
        sa.DDL(  # type: ignore[no-untyped-call]
            f"CREATE TRIGGER audit_events_no_{_verb.lower()} BEFORE {_verb} ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
        ).execute_if(dialect="sqlite"),
    )


def now_iso() -> str:
    """Now, UTC, ISO 8601 with microseconds (sorts as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def create_engine(url: str, *, busy_timeout_s: float = 30.0) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and immediate write locks.

    Connections opened with ``execution_options(write=True)`` begin with ``BEGIN
    IMMEDIATE`` on SQLite, taking the write lock up front (so a read-then-write transaction
    cannot be overtaken by another writer between its read and its write).
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(
            f"The metadata URL must be a SQLAlchemy URL such as 'sqlite:///path/registry.db'. "
            f"Got {url!r} instead.",
            hint="Check SHIPYARD_REGISTRY__METADATA_URL and your config file.",
        ) from exc
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    if (
        parsed.database
        and parsed.database != ":memory:"
        and not parsed.database.startswith("file:")
    ):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        parsed,
        connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        _set_wal(cur, busy_timeout_s)
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def _set_wal(cur: Any, busy_timeout_s: float) -> None:
    """Switch to WAL, retrying while another process holds the lock.

    SQLite answers "database is locked" at once, without waiting on the busy timeout,
    when two processes switch a new database's journal mode at the same moment.
    """
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


#: schema version N -> the function that upgrades a version-N database to N + 1. An empty
#: database is created at SCHEMA_VERSION directly (``metadata.create_all``), so these
#: steps only ever run on databases written by an older shipyard.
def _add_audit_events(conn: Connection) -> None:
    audit_events.create(conn)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _add_audit_events}


def read_schema_version(conn: Connection) -> int:
    """The schema version recorded in the database (0 for an empty database)."""
    if not sa.inspect(conn).has_table("schema_info"):
        return 0
    row = conn.execute(
        sa.select(schema_info.c.value).where(schema_info.c.key == "schema_version")
    ).first()
    return int(row[0]) if row else 0


def migrate(engine: Engine, target: int = SCHEMA_VERSION) -> int:
    """Bring the database to ``target``, one recorded step at a time; returns the version.

    Runs in one write transaction, so two processes opening a new registry at once do not
    both create it, and a crash mid-migration leaves the old schema in place.

    Args:
        engine: An engine from :func:`create_engine`.
        target: The schema version to reach (this shipyard's, by default).

    Returns:
        The schema version the database is at afterwards.

    Raises:
        ConfigError: the database is newer than this shipyard, or a step is missing.
    """
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        current = read_schema_version(conn)
        if current > target:
            raise ConfigError(
                f"The registry's schema version must be at most {target} for this shipyard. "
                f"Got {current} instead.",
                hint="Upgrade shipyard to open this registry.",
            )
        if current == 0:
            logger.info("Creating registry schema version %d", SCHEMA_VERSION)
            metadata.create_all(conn)
            current = min(SCHEMA_VERSION, target)
            _stamp(conn, current)
        while current < target:
            step = MIGRATIONS.get(current)
            if step is None:
                raise ConfigError(
                    f"Registry schema version {current} must have a migration to "
                    f"{current + 1}. None is registered.",
                    hint="Upgrade shipyard through an intermediate release.",
                )
            logger.info("Migrating registry schema %d -> %d", current, current + 1)
            step(conn)
            current += 1
            _stamp(conn, current)
    return current


def _stamp(conn: Connection, version: int) -> None:
    stmt = sa.select(schema_info.c.key).where(schema_info.c.key == "schema_version")
    if conn.execute(stmt).first() is None:
        conn.execute(schema_info.insert().values(key="schema_version", value=str(version)))
    else:
        conn.execute(
            schema_info.update()
            .where(schema_info.c.key == "schema_version")
            .values(value=str(version))
        )

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from shipyard.config import Settings, with_overrides
from shipyard.errors import ConfigError, ConflictError
from shipyard.registry import ModelRegistry
from shipyard.registry import metadata as md

from .conftest import tiny_new


def test_schema_version_is_recorded_and_newer_databases_are_refused(
    registry: ModelRegistry, settings: Settings
) -> None:
    with registry.engine.connect() as conn:
        assert md.read_schema_version(conn) == md.SCHEMA_VERSION
    with registry.engine.begin() as conn:
        conn.execute(
            sa.update(md.schema_info)
            .where(md.schema_info.c.key == "schema_version")
            .values(value="99")
        )
    with pytest.raises(ConfigError, match="schema version") as info:
        ModelRegistry.open(settings)
    assert "Upgrade shipyard" in (info.value.hint or "")


def test_migrations_run_from_an_older_schema_at_open(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ModelRegistry.open(settings).close()  # a database at schema n, as an old shipyard left it
    calls: list[int] = []
    n = md.SCHEMA_VERSION

    def step(conn: sa.engine.Connection) -> None:
        calls.append(1)
        conn.execute(sa.text("CREATE TABLE extra_v2 (id INTEGER)"))

    monkeypatch.setitem(md.MIGRATIONS, n, step)
    engine = md.create_engine(settings.metadata_url)
    try:
        assert md.migrate(engine, target=n + 1) == n + 1
        assert md.migrate(engine, target=n + 1) == n + 1  # applied once, recorded
        assert calls == [1]
        with engine.connect() as conn:
            assert md.read_schema_version(conn) == n + 1
            assert sa.inspect(conn).has_table("extra_v2")
    finally:
        engine.dispose()


def test_a_missing_migration_step_is_a_config_error(settings: Settings) -> None:
    ModelRegistry.open(settings).close()
    engine = md.create_engine(settings.metadata_url)
    try:
        with pytest.raises(ConfigError, match="migration"):
            md.migrate(engine, target=md.SCHEMA_VERSION + 1)
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_with_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    engine = md.create_engine(f"sqlite:///{tmp_path / 'deep' / 'er' / 'r.db'}", busy_timeout_s=2.5)
    try:
        with engine.connect() as conn:
            pragma = conn.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 2500
        assert (tmp_path / "deep" / "er" / "r.db").is_file()  # parent folders created
    finally:
        engine.dispose()


def test_a_bad_metadata_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SQLAlchemy URL"):
        md.create_engine("not a url")


def test_writers_take_the_lock_up_front_and_time_out_as_conflict(
    settings: Settings, files: dict[str, Path]
) -> None:
    fast = with_overrides(settings, {"registry": {"busy_timeout_s": 0.2}})
    reg = ModelRegistry.open(fast)
    db = settings.home / "registry.db"
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process is writing
        with pytest.raises(ConflictError, match="busy timeout") as info:
            reg.register("m", tiny_new(), files)
        assert "BUSY_TIMEOUT_S" in (info.value.hint or "")
        holder.execute("ROLLBACK")
        assert reg.register("m", tiny_new(), files).version == 1
    finally:
        holder.close()
        reg.close()

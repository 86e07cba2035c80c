"""The audit log: every registry mutation leaves one append-only entry (real SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from shipyard.config import Settings
from shipyard.registry import ModelRegistry, audit_context
from shipyard.registry import metadata as md
from tests.unit.registry.conftest import tiny_new


def test_every_mutation_is_audited_with_who_what_where(
    registry: ModelRegistry, tiny_onnx: Path, other_onnx: Path, tmp_path: Path
) -> None:
    registry.register("iris", tiny_new(), {"model.onnx": tiny_onnx}, actor="alice")
    registry.register("iris", tiny_new(), {"model.onnx": other_onnx}, actor="alice")
    registry.promote("iris:2", "prod", actor="bob")
    registry.rollback("iris", "default", actor="bob")
    registry.update_metadata("iris:1", tags={"team": "a"}, actor="carol")
    registry.remove_alias("iris", "prod", actor="bob")
    registry.delete("iris:2", actor="dave")
    registry.gc()
    archive = registry.export_version("iris:1", tmp_path / "a.tar.gz")
    registry.import_archive(archive, name="copy", actor="erin")
    entries = registry.audit_log()
    got = [(e.action, e.target, e.actor) for e in entries]
    assert got == [
        ("register", "iris:1", "alice"),
        ("alias.register", "iris@default", "alice"),
        ("register", "iris:2", "alice"),
        ("alias.register", "iris@default", "alice"),
        ("alias.promote", "iris@prod", "bob"),
        ("alias.rollback", "iris@default", "bob"),
        ("metadata.update", "iris:1", "carol"),
        ("alias.remove", "iris@prod", "bob"),
        ("delete", "iris:2", "dave"),
        ("gc", "registry", entries[8 + 1].actor),
        ("import", "copy:1", "erin"),
        ("alias.register", "copy@default", "erin"),
    ]
    assert all(e.source.startswith("local:") for e in entries)
    assert (
        entries[0].details["files"]["model.onnx"]
        == registry.get("iris:1").manifest.files["model.onnx"].sha256
    )
    assert entries[5].details == {"old": 2, "new": 1}
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    assert [e.at for e in entries] == sorted(e.at for e in entries)


def test_audit_context_records_the_client_address_and_actor(
    registry: ModelRegistry, tiny_onnx: Path
) -> None:
    with audit_context(source="203.0.113.7:51234", actor="token:deploy-bot"):
        registry.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
        registry.record_audit("server.load", "iris:1", details={"ms": 12})
    registry.record_audit("server.unload", "iris:1", actor="ops", source="10.0.0.1:9")
    entries = registry.audit_log(target="iris")
    assert {(e.actor, e.source) for e in entries[:3]} == {("token:deploy-bot", "203.0.113.7:51234")}
    assert registry.alias_history("iris")[0].actor == "token:deploy-bot"
    last = entries[-1]
    assert (last.action, last.actor, last.source) == ("server.unload", "ops", "10.0.0.1:9")
    assert [e.action for e in registry.audit_log(action="server.load")] == ["server.load"]
    assert [e.action for e in registry.audit_log(limit=1)] == ["server.unload"]
    assert registry.audit_log(target="other") == []


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_events SET actor = 'mallory'", "DELETE FROM audit_events"]
)
def test_attack_rewriting_the_audit_log_is_refused(
    registry: ModelRegistry, tiny_onnx: Path, statement: str
) -> None:
    registry.register("iris", tiny_new(), {"model.onnx": tiny_onnx}, actor="alice")
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), registry.engine.begin() as conn:
        conn.exec_driver_sql(statement)
    assert [e.actor for e in registry.audit_log()] == ["alice", "alice"]


def test_a_schema_1_registry_gains_the_audit_table_on_open(
    settings: Settings, tiny_onnx: Path
) -> None:
    ModelRegistry.open(settings).close()
    engine = md.create_engine(settings.metadata_url)
    with engine.begin() as conn:  # what a shipyard before the audit log left behind
        conn.exec_driver_sql("DROP TABLE audit_events")
        conn.exec_driver_sql("UPDATE schema_info SET value = '1' WHERE key = 'schema_version'")
    engine.dispose()
    with ModelRegistry.open(settings) as reg:
        reg.register("iris", tiny_new(), {"model.onnx": tiny_onnx}, actor="alice")
        assert [e.action for e in reg.audit_log()] == ["register", "alias.register"]
        with (
            pytest.raises(sa.exc.DBAPIError, match="append-only"),
            reg.engine.begin() as conn,
        ):
            conn.exec_driver_sql("DELETE FROM audit_events")


def test_cli_audit_lists_entries_as_json_and_table(
    settings: Settings, tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipyard.cli.main import cli

    with ModelRegistry.open(settings) as reg:
        reg.register("iris", tiny_new(), {"model.onnx": tiny_onnx}, actor="alice")
    monkeypatch.setenv("SHIPYARD_HOME", str(settings.home))
    runner = CliRunner()
    res = runner.invoke(cli, ["audit", "--json", "--model", "iris"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [(r["action"], r["actor"]) for r in rows] == [
        ("register", "alice"),
        ("alias.register", "alice"),
    ]
    res = runner.invoke(cli, ["audit", "--action", "register"])
    assert res.exit_code == 0, res.output
    assert "iris:1" in res.output and "alias.register" not in res.output

"""``shipyard tokens create|list|revoke`` against a real token store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shipyard.security import TokenStore


def test_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shipyard.cli.main import cli

    monkeypatch.setenv("SHIPYARD_HOME", str(tmp_path))
    runner = CliRunner()
    res = runner.invoke(
        cli, ["tokens", "create", "ci", "--scope", "infer", "--scope", "read", "--json"]
    )
    assert res.exit_code == 0, res.output
    created = json.loads(res.output)
    raw = created["token"]
    assert created["scopes"] == ["infer", "read"]
    store = TokenStore(tmp_path / "security.db")
    assert store.verify(raw) is not None

    res = runner.invoke(cli, ["tokens", "list", "--json"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.output)
    assert [t["id"] for t in listed] == [created["id"]]
    assert raw.split("_")[2] not in res.output
    res = runner.invoke(cli, ["tokens", "list"])
    assert res.exit_code == 0 and "API tokens" in res.output

    res = runner.invoke(cli, ["tokens", "revoke", created["id"]])
    assert res.exit_code == 0, res.output
    assert store.verify(raw) is None
    res = runner.invoke(cli, ["tokens", "revoke", "nope"])
    assert res.exit_code != 0
    res = runner.invoke(cli, ["tokens", "create", "x", "--scope", "root"])
    assert res.exit_code != 0
    res = runner.invoke(cli, ["tokens", "create", "plain", "--scope", "admin"])
    assert res.exit_code == 0 and res.output.startswith("shy_")
    store.close()

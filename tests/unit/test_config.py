from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.config import load_settings
from shipyard.errors import ConfigError


def test_defaults_live_under_home(tmp_path: Path) -> None:
    s = load_settings({"home": str(tmp_path)})
    assert s.metadata_url == f"sqlite:///{tmp_path / 'registry.db'}"
    assert s.store_path == tmp_path / "store"


def test_env_beats_file_and_overrides_beat_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "shipyard.toml"
    cfg.write_text("[batching]\nmax_wait_ms = 7.0\nmax_batch_size = 4\n")
    s = load_settings(config_file=cfg)
    assert s.batching.max_wait_ms == 7.0
    monkeypatch.setenv("SHIPYARD_BATCHING__MAX_WAIT_MS", "5")
    s = load_settings(config_file=cfg)
    assert s.batching.max_wait_ms == 5.0
    assert s.batching.max_batch_size == 4
    s = load_settings({"batching": {"max_wait_ms": 1.0}}, config_file=cfg)
    assert s.batching.max_wait_ms == 1.0


def test_home_comes_from_shipyard_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_HOME", str(tmp_path / "elsewhere"))
    assert load_settings().home == tmp_path / "elsewhere"


def test_unknown_keys_in_file_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "shipyard.toml"
    cfg.write_text("[batching]\nmax_wait = 7.0\n")
    with pytest.raises(ConfigError, match=r"batching\.max_wait"):
        load_settings(config_file=cfg)


def test_constraint_violation_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_batch_size") as info:
        load_settings({"batching": {"max_batch_size": 0}})
    assert info.value.hint is not None
    assert "SHIPYARD_BATCHING__MAX_BATCH_SIZE" in info.value.hint


def test_clashing_ports_are_refused() -> None:
    with pytest.raises(ConfigError, match="must differ"):
        load_settings({"server": {"port": 9000, "grpc_port": 9000}})


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must exist"):
        load_settings(config_file=tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[[")
    with pytest.raises(ConfigError, match="valid TOML"):
        load_settings(config_file=bad)

"""Per-model serving settings: global < the version's serving settings < a serve config."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shipyard.cli.serve import read_serve_config
from shipyard.config import Settings
from shipyard.errors import ConfigError
from shipyard.registry import ModelRegistry
from shipyard.runtime.pool import ModelPool
from shipyard.server.dataplane import DataPlane

from .conftest import register_tiny


def test_serve_config_reads_refs_tables_and_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "serve.toml"
    cfg.write_text(
        'models = ["a:1", {ref = "b@prod", batching = {max_batch_size = 4}}]\n'
        "[server]\nport = 9123\n"
    )
    refs, overrides, per_model = read_serve_config(cfg)
    assert refs == ["a:1", "b@prod"]
    assert overrides == {"server": {"port": 9123}}
    assert per_model == {"b@prod": {"batching": {"max_batch_size": 4}}}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('models = "a"', "must be a list"),
        ("models = [{name = 'a'}]", "table with 'ref'"),
        ("models = [{ref = 'a', threads = 2}]", "takes only"),
        ("models = [", "readable TOML"),
    ],
)
def test_serve_config_errors_are_clear(tmp_path: Path, text: str, match: str) -> None:
    cfg = tmp_path / "serve.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_serve_config(cfg)


def test_settings_are_layered_per_model(settings: Settings, tmp_path: Path) -> None:
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp_path, "tuned")
    register_tiny(reg, tmp_path, "plain")
    # what `shipyard tune` will write: this version serves best without batching
    reg.update_metadata("tuned:1", serving={"batching": {"max_batch_size": 1}})

    async def main() -> None:
        pool = ModelPool(reg, settings.runtime)
        dp = DataPlane(
            pool,
            settings,
            model_settings={
                "plain": {"batching": {"max_batch_size": 4}, "runtime": {"intra_op_threads": 2}}
            },
        )
        await dp.start(["tuned", "plain"])
        try:
            tuned, plain = dp.lookup("tuned"), dp.lookup("plain")
            assert tuned.batcher is None  # from the registry's serving settings
            assert plain.batcher is not None
            assert plain.batcher.settings.max_batch_size == 4  # from the serve config
            assert plain.runtime.settings.intra_op_threads == 2  # type: ignore[attr-defined]
            assert tuned.runtime.settings.intra_op_threads == settings.runtime.intra_op_threads  # type: ignore[attr-defined]
        finally:
            await dp.aclose()

    asyncio.run(main())
    reg.close()


def test_invalid_per_model_setting_makes_that_model_unavailable(
    settings: Settings, tmp_path: Path
) -> None:
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp_path, "bad")
    register_tiny(reg, tmp_path, "good")

    async def main() -> None:
        dp = DataPlane(
            ModelPool(reg, settings.runtime),
            settings,
            model_settings={"bad": {"runtime": {"intra_op_threads": -1}}},
        )
        await dp.start(["bad", "good"])
        try:
            assert dp.model_ready("good")
            assert not dp.model_ready("bad")
            row = next(r for r in dp.index() if r["name"] == "bad")
            assert row["state"] == "UNAVAILABLE"
            assert "intra_op_threads" in row["reason"]
        finally:
            await dp.aclose()

    asyncio.run(main())
    reg.close()

"""`shipyard tune` against real servers on 127.0.0.1 and a real load process."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from shipyard.cli.main import main
from shipyard.config import Settings
from shipyard.errors import InvalidData, InvalidInputError
from shipyard.registry import ModelRegistry
from shipyard.runtime.pool import ModelPool
from shipyard.server.dataplane import DataPlane
from shipyard.workflows.tune import Candidate, tune


def test_tune_writes_settings_that_serve_then_uses(
    registry: ModelRegistry, settings: Settings, tiny: str
) -> None:
    registry.update_metadata(tiny, serving={"batching": {"max_queue_size": 64}})
    ticks: list[int] = []
    planned: list[int] = []
    started = time.perf_counter()
    result = tune(
        registry,
        "tiny",
        slo_p99_ms=1000,
        concurrency=4,
        settings=settings,
        budget_s=4,
        cores=2,
        progress=ticks.append,
        on_plan=planned.append,
    )
    elapsed = time.perf_counter() - started
    assert elapsed < 4 + 5  # bounded by the budget (one trial may straddle it)
    assert result.ref == tiny
    assert result.chosen is not None and result.written
    phases = [t.phase for t in result.trials]
    assert phases[:3] == ["current", "threads", "threads"]
    assert result.trials[0].candidate == Candidate(0, 32, 0.0)  # global defaults
    # ORT's own choice at batch 4 does what the current settings do at concurrency 4: skipped
    assert [t.candidate.intra_op_threads for t in result.trials[1:3]] == [1, 2]
    assert all(t.requests > 0 and t.errors == 0 and t.meets_slo for t in result.trials)
    assert sum(ticks) == planned[0]  # the progress bar reaches its total
    c = result.chosen.candidate

    serving = registry.get(tiny).serving
    assert serving["batching"] == {
        "max_queue_size": 64,  # what was there is kept
        "max_batch_size": c.max_batch_size,
        "max_wait_ms": c.max_wait_ms,
    }
    assert serving["runtime"] == {"intra_op_threads": c.intra_op_threads}
    assert serving["tuned"]["concurrency"] == 4
    assert [e.field for e in registry.metadata_history(tiny)][-1] == "serving"

    # `shipyard serve` picks them up with no other change: global settings < version's serving
    async def served() -> tuple[object, int]:
        dp = DataPlane(ModelPool(registry, settings.runtime), settings)
        await dp.start(["tiny"])
        try:
            model = dp.lookup("tiny")
            threads = model.runtime.settings.intra_op_threads  # type: ignore[attr-defined]
            batcher = model.batcher
            out = await dp.infer(model, model.check({"x": np.ones((1, 4), np.float32)}))
            assert out["y"].shape == (1, 2)
            return (None if batcher is None else batcher.settings), threads
        finally:
            await dp.aclose()

    batching, threads = asyncio.run(served())
    assert threads == c.intra_op_threads
    if c.max_batch_size == 1:
        assert batching is None  # a batch of one means no batcher
    else:
        assert batching.max_batch_size == c.max_batch_size  # type: ignore[attr-defined]
        assert batching.max_wait_ms == c.max_wait_ms  # type: ignore[attr-defined]
        assert batching.max_queue_size == 64  # type: ignore[attr-defined]


def test_tune_writes_nothing_when_no_candidate_meets_the_slo(
    registry: ModelRegistry, settings: Settings, tiny: str
) -> None:
    result = tune(registry, tiny, slo_p99_ms=0.001, concurrency=2, settings=settings, budget_s=1.5)
    assert result.trials and not any(t.meets_slo for t in result.trials)
    assert result.chosen is None and not result.written
    assert registry.get(tiny).serving == {}
    assert result.skipped > 0  # the budget cut the search short


def test_tune_refuses_a_sample_the_model_rejects(
    registry: ModelRegistry, settings: Settings, tiny: str
) -> None:
    with pytest.raises(InvalidData, match="must be accepted"):
        tune(
            registry,
            tiny,
            slo_p99_ms=100,
            concurrency=1,
            settings=settings,
            budget_s=2,
            sample=np.ones((2, 3), np.float32),
        )
    assert registry.get(tiny).serving == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"slo_p99_ms": 0}, "slo-p99-ms"),
        ({"slo_p99_ms": float("nan")}, "slo-p99-ms"),
        ({"concurrency": 0}, "concurrency"),
        ({"budget_s": 0}, "budget-s"),
    ],
)
def test_tune_validates_its_arguments(
    registry: ModelRegistry, settings: Settings, tiny: str, kwargs: dict[str, float], match: str
) -> None:
    args: dict[str, float] = {"slo_p99_ms": 10, "concurrency": 1, "budget_s": 1, **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        tune(registry, tiny, settings=settings, **args)  # type: ignore[arg-type]


def test_cli_tune_json_and_slo_miss(
    registry: ModelRegistry, tiny: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = tmp_path / "x.npz"
    np.savez(sample, x=np.zeros((5, 4), np.float32))
    code = main(
        [
            "--json",
            "tune",
            tiny,
            "--slo-p99-ms",
            "500",
            "--concurrency",
            "2",
            "--budget-s",
            "2",
            "--sample",
            str(sample),
            "--dry-run",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["chosen"] is not None and out["written"] is False
    assert {"candidate", "rps", "p50_ms", "p99_ms", "meets_slo"} <= set(out["trials"][0])
    assert registry.get(tiny).serving == {}  # --dry-run

    code = main(["tune", tiny, "--slo-p99-ms", "0.001", "--concurrency", "1", "--budget-s", "1"])
    captured = capsys.readouterr()
    assert code == 1
    assert "slo-not-met" in captured.err
    assert "threads" in captured.out  # the table of what was tried is still shown


def test_load_generator_measures_a_real_server(
    settings: Settings, tiny: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from shipyard.config import with_overrides
    from shipyard.server.runner import BackgroundServer
    from shipyard.workflows._loadgen import main as loadgen

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv_settings = with_overrides(
        settings, {"server": {"port": port, "grpc_port": 0, "management_port": 0}}
    )
    body = tmp_path / "body.json"
    body.write_text(
        json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        )
    )
    with BackgroundServer([tiny], srv_settings):
        ok = ["127.0.0.1", str(port), f"/v2/models/{tiny}/infer", str(body), "3", "0.4", "0.1"]
        assert loadgen(ok) == 0
        good = json.loads(capsys.readouterr().out)
        bad = [*ok[:2], "/v2/models/nope/infer", *ok[3:]]
        assert loadgen(bad) == 0
        refused = json.loads(capsys.readouterr().out)
    assert good["requests"] > 10 and good["errors"] == 0
    assert good["rps"] == pytest.approx(good["requests"] / 0.4)
    assert 0 < good["p50_ms"] <= good["p99_ms"] <= good["max_ms"]
    assert refused["requests"] == 0 and refused["errors"] > 0  # 404s are errors, not latency

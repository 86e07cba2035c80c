"""A process killed with SIGKILL loses at most the prediction log's last flush interval."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shipyard.monitoring.predlog import iter_rows, segment_paths
from shipyard.registry import ModelRegistry

from .server.conftest import register_tiny
from .server.test_process import _spawn

WRITER = """
import os, sys
import numpy as np
from pathlib import Path
from shipyard.config import MonitoringSettings
from shipyard.monitoring.predlog import PredictionLog

log = PredictionLog(Path(sys.argv[1]), MonitoringSettings())
def batch(prefix):
    for i in range(20):
        x = np.full((1, 2), i, dtype=np.float32)
        log.record(f"{prefix}{i}", "m", "1", {"x": x}, {"y": x * 2}, 0.001)
batch("a")
log.flush()
os.environ["SHIPYARD_FAULT_POINT"] = sys.argv[2]  # only the second segment dies
batch("b")
log.flush()
"""


@pytest.mark.parametrize(
    ("point", "expected"),
    [("predlog.after-staged-write", 20), ("predlog.after-segment-rename", 40)],
)
def test_sigkill_while_writing_a_segment_never_tears_one(
    tmp_path: Path, point: str, expected: int
) -> None:
    marker = tmp_path / "marker"
    proc = subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path / "mon"), point],
        env={**os.environ, "SHIPYARD_FAULT_MARKER": str(marker)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert marker.read_text() == point  # the kill happened where the test says
    rows = list(iter_rows(tmp_path / "mon"))  # every visible segment parses
    assert len(rows) == expected
    assert [r["request_id"] for r in rows[:20]] == [f"a{i}" for i in range(20)]
    assert all(r["outputs"]["y"] == [2 * v for v in r["inputs"]["x"]] for r in rows)


def test_server_killed_loses_at_most_the_last_flush_interval(
    home: Path,
    tmp_path: Path,
    settings,  # type: ignore[no-untyped-def]
) -> None:
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp_path, "tiny")
    reg.close()
    os.environ["SHIPYARD_MONITORING__FLUSH_INTERVAL_S"] = "0.2"
    try:
        proc, url = _spawn(home, "tiny")
    finally:
        del os.environ["SHIPYARD_MONITORING__FLUSH_INTERVAL_S"]
    try:
        body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1] * 8}]}
        with httpx.Client(base_url=url) as c:
            for i in range(30):
                r = c.post("/v2/models/tiny/infer", json=body, headers={"x-request-id": f"a{i}"})
                assert r.status_code == 200
            time.sleep(1.0)  # several flush intervals
            for i in range(5):
                c.post("/v2/models/tiny/infer", json=body, headers={"x-request-id": f"b{i}"})
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    root = home / "monitoring"
    assert segment_paths(root)
    ids = {(r["request_id"], r["row"]) for r in iter_rows(root)}  # all parse
    assert {(f"a{i}", row) for i in range(30) for row in (0, 1)} <= ids

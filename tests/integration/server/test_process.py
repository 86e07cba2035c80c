"""The server as a real process: readiness, SIGTERM drain, a failed model not blocking others."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx

from shipyard.registry import ModelRegistry

from .conftest import register_tiny, spawn_server


def _spawn(home: Path, *refs: str) -> tuple[subprocess.Popen[str], str]:
    proc, url = spawn_server(home, *refs)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v2/health/live", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"server did not start: {proc.stdout.read() if proc.stdout else ''}")


def test_sigterm_drains_and_exits_zero(home: Path, tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp_path, "tiny")
    reg.close()
    proc, url = _spawn(home, "tiny")
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    assert httpx.post(url + "/v2/models/tiny/infer", json=body).status_code == 200
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Stopped" in out


def test_model_that_fails_to_load_is_reported_and_others_serve(
    home: Path,
    tmp_path: Path,
    settings,  # type: ignore[no-untyped-def]
) -> None:
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp_path, "good")
    reg.close()
    proc, url = _spawn(home, "good", "missing-model")
    try:
        body = {
            "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
        }
        assert httpx.post(url + "/v2/models/good/infer", json=body).status_code == 200
        assert httpx.get(url + "/v2/health/ready").status_code == 503
        r = httpx.get(url + "/v2/models/missing-model/ready")
        assert r.status_code == 503
        assert "model-not-found" in r.json()["error"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)

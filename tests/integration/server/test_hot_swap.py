"""Hot swap: an alias moved in the registry mid-load switches versions with zero failures."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from shipyard.registry import ModelRegistry
from shipyard.runtime import FakeRuntime

from .conftest import register_tiny, server_settings, start_server, stop_server


@pytest.mark.parametrize("slow_load", [False, True], ids=["onnxruntime", "load-takes-1.2s"])
def test_alias_move_swaps_versions_without_failed_requests(
    home: Path, tmp_path: Path, slow_load: bool
) -> None:
    settings = server_settings(home)
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp_path, "swap", seed=0)
    reg.promote("swap:1", "prod")
    factory = (lambda rs: FakeRuntime(load_s=1.2)) if slow_load else None
    server = start_server(["swap@prod"], settings, runtime_factory=factory)
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    seen: dict[int, list[str]] = {}
    failures: list[str] = []
    stop_at = time.monotonic() + (8.0 if slow_load else 6.0)
    moved_at: list[float] = []

    def client(i: int) -> None:
        mine = seen.setdefault(i, [])
        with httpx.Client(base_url=server.http, timeout=10) as c:
            while time.monotonic() < stop_at:
                r = c.post("/v2/models/swap@prod/infer", json=body)
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    mine.append(r.json()["model_version"])

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        register_tiny(reg, tmp_path, "swap", seed=1)
        reg.promote("swap:2", "prod")
        moved_at.append(time.monotonic())
        for t in threads:
            t.join()
    finally:
        stop_server(server)
        reg.close()
    assert failures == []
    assert len(seen) == 8
    for versions in seen.values():
        # each client sends one request at a time: it sees the old version, then the new
        # one, and never goes back
        assert versions[0] == "1" and versions[-1] == "2", versions[:3] + versions[-3:]
        first_new = versions.index("2")
        assert set(versions[:first_new]) == {"1"}
        assert set(versions[first_new:]) == {"2"}
    assert np.isfinite(moved_at[0])

"""Memory comes back: load/unload cycles of a 50 MB model do not grow RSS, and the budget holds."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from shipyard.config import Settings
from shipyard.errors import CapacityExceeded
from shipyard.registry import ModelRegistry
from shipyard.runtime.pool import ModelPool
from shipyard.spec import DType, NewVersion, Signature, TensorSpec

SIDE = 3700  # 3700 x 3700 float32 = 54.8 MB of weights


def _big_model(path: Path) -> Path:
    w = np.random.default_rng(0).standard_normal((SIDE, SIDE), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", SIDE])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def big(settings: Settings, tmp_path: Path) -> ModelRegistry:
    reg = ModelRegistry.open(settings)
    sig = Signature(
        inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, SIDE)),),
        outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, SIDE)),),
    )
    reg.register(
        "big",
        NewVersion(signature=sig, framework="onnx"),
        {"model.onnx": _big_model(tmp_path / "big.onnx")},
    )
    return reg


@pytest.mark.slow
def test_fifty_load_unload_cycles_release_memory(big: ModelRegistry) -> None:
    pool = ModelPool(big)
    for _ in range(3):  # let allocators reach their steady state
        pool.load("big")
        pool.unload("big", 1)
    gc.collect()
    baseline = _rss_bytes()
    runtimes: list[weakref.ref[object]] = []
    for _ in range(50):
        loaded = pool.load("big")
        assert loaded.runtime.ready
        runtimes.append(weakref.ref(loaded.runtime))
        del loaded
        assert pool.unload("big", 1)
    gc.collect()
    grown = _rss_bytes() - baseline
    assert [r() for r in runtimes if r() is not None] == [], "runtime sessions were not released"
    assert grown < 0.10 * baseline, (
        f"RSS grew by {grown / 1e6:.1f} MB over a {baseline / 1e6:.1f} MB baseline"
    )
    big.close()


def test_memory_budget_refuses_or_evicts(big: ModelRegistry, settings: Settings) -> None:
    size = big.get("big").manifest.files["model.onnx"].size_bytes
    pool = ModelPool(big, memory_budget_bytes=size - 1)
    with pytest.raises(CapacityExceeded, match="memory budget") as info:
        pool.load("big")
    assert "MEMORY_BUDGET" in (info.value.hint or "")
    assert pool.loaded() == []
    pool = ModelPool(big, memory_budget_bytes=int(size * 1.5), evict_idle=True)
    pool.load("big:1")
    big.promote("big:1", "other")
    # same version: already loaded, no second copy
    assert pool.load("big@other") is pool.get("big", 1)
    pool.close()
    big.close()

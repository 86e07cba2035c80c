"""What a load refuses: corrupted artifacts, custom operator domains, external data (real ORT)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from shipyard.config import RuntimeSettings, Settings
from shipyard.errors import (
    ArtifactCorrupted,
    CustomOpNotAllowed,
    RuntimeLoadError,
    UnsafeArtifact,
)
from shipyard.registry import ModelRegistry
from shipyard.runtime.onnx import OnnxRuntime, check_model_safety
from shipyard.runtime.pool import ModelPool
from shipyard.server.dataplane import DataPlane
from shipyard.spec import DType, Lineage, ModelManifest, NewVersion, Signature, TensorSpec

SIG = Signature(
    inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, 4)),),
    outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 4)),),
)


def _manifest() -> ModelManifest:
    return ModelManifest(
        name="m",
        version=1,
        signature=SIG,
        framework="onnx",
        files={},
        created_at=datetime.now(UTC),
    )


def _custom_domain_model() -> bytes:
    node = helper.make_node("Evil", ["x"], ["y"], domain="com.attacker")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.attacker", 1)],
    )
    model.ir_version = 8
    return model.SerializeToString()


def _local_function_model() -> bytes:
    """A model-local function in its own domain, made only of ONNX ops: no outside code."""
    fn = helper.make_function(
        "local.fns",
        "Twice",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        opset_imports=[helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph(
        [helper.make_node("Twice", ["x"], ["y"], domain="local.fns")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local.fns", 1)],
        functions=[fn],
    )
    model.ir_version = 8
    return model.SerializeToString()


def _external_data_model(location: str) -> bytes:
    w = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "W")
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for key, value in {"location": location, "offset": "0", "length": "64"}.items():
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_attack_custom_op_domain_is_refused_at_load() -> None:
    rt = OnnxRuntime(RuntimeSettings(intra_op_threads=1))
    with pytest.raises(CustomOpNotAllowed) as info:
        rt.load(_custom_domain_model(), _manifest())
    assert info.value.code == "custom-op-not-allowed"
    assert "com.attacker" in info.value.message
    assert not rt.ready


def test_an_allow_listed_domain_passes_the_check_and_reaches_the_engine() -> None:
    rt = OnnxRuntime(RuntimeSettings(intra_op_threads=1, allowed_op_domains=("", "com.attacker")))
    # allowed by us, but no library implements it: ONNX Runtime itself refuses it
    with pytest.raises(RuntimeLoadError, match="ONNX Runtime must be able to load"):
        rt.load(_custom_domain_model(), _manifest())


def test_model_local_functions_are_not_custom_ops() -> None:
    rt = OnnxRuntime(RuntimeSettings(intra_op_threads=1))
    rt.load(_local_function_model(), _manifest())
    out = rt.predict({"x": np.ones((1, 4), dtype=np.float32)})
    np.testing.assert_allclose(out["y"], 2 * np.ones((1, 4)))


@pytest.mark.parametrize("location", ["/etc/passwd", "../../secret.bin", "weights.bin"])
def test_attack_external_data_location_is_refused_at_load(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.bin").write_bytes(np.ones(16, dtype=np.float32).tobytes())
    rt = OnnxRuntime(RuntimeSettings(intra_op_threads=1))
    with pytest.raises(UnsafeArtifact, match="self-contained") as info:
        rt.load(_external_data_model(location), _manifest())
    assert info.value.code == "unsafe-artifact"
    assert not rt.ready


def test_garbage_bytes_are_a_load_error() -> None:
    with pytest.raises(RuntimeLoadError, match="serialized ONNX model"):
        check_model_safety(b"\xff" * 64, ("",), "m:1")


def _register(reg: ModelRegistry, tmp_path: Path, model: onnx.ModelProto | bytes) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    sig = Signature(
        inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, 4)),),
        outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 2)),),
    )
    reg.register(
        "m", NewVersion(signature=sig, framework="onnx", lineage=Lineage()), {"model.onnx": path}
    )


def test_attack_corrupted_blob_refuses_the_load_and_counts_it(
    settings: Settings, tiny_onnx: Path, tmp_path: Path
) -> None:
    reg = ModelRegistry.open(settings)
    try:
        _register(reg, tmp_path, tiny_onnx.read_bytes())
        mv = reg.get("m")
        blob = reg.store.local_path(mv.manifest.files["model.onnx"].sha256)
        assert blob is not None
        os.chmod(blob, 0o644)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
        blob.write_bytes(bytes(data))

        pool = ModelPool(reg, RuntimeSettings(intra_op_threads=1))
        dp = DataPlane(pool, settings)

        async def go() -> None:
            with pytest.raises(ArtifactCorrupted) as info:
                await dp.load("m")
            assert info.value.code == "artifact-corrupted"
            assert "changed on disk" in info.value.message

        asyncio.run(go())
        assert pool.loaded() == []
        text = dp.metrics.exposition().decode()
        assert 'shipyard_artifact_integrity_failures_total{model="m",version="1"} 1.0' in text
    finally:
        reg.close()

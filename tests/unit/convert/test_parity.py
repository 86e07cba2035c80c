from __future__ import annotations

import numpy as np
import pytest

from shipyard.convert import check_parity, generate_inputs
from shipyard.errors import ParityCheckFailed
from shipyard.spec import DType, Signature, TaskSchema, TaskType, TensorSpec
from shipyard.testing import make_tiny_onnx_model, save_tiny_onnx_model


@pytest.fixture
def model_path(tmp_path):
    return save_tiny_onnx_model(tmp_path / "tiny.onnx")


def _linear(inputs):
    model = make_tiny_onnx_model()
    from onnx import numpy_helper

    w, b = (numpy_helper.to_array(t) for t in model.graph.initializer)
    return {"y": inputs["x"] @ w + b}


@pytest.fixture
def sample():
    return {"x": np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)}


def test_identical_outputs_pass(model_path, sample):
    report = check_parity(_linear, model_path, sample)
    assert report.passed
    assert report.n_samples == 16
    assert report.max_abs_error < 1e-5
    assert set(report.per_output) == {"y"}
    assert report.label_agreement is None


def test_offset_reference_fails_with_the_worst_elements(model_path, sample):
    def shifted(inputs):
        out = _linear(inputs)
        out["y"] = out["y"] + 1.0
        out["y"][3, 1] += 5.0
        return out

    with pytest.raises(ParityCheckFailed) as info:
        check_parity(shifted, model_path, sample, atol=1e-4, rtol=1e-3)

    err = info.value
    assert "'y'" in err.message and "atol=0.0001" in err.message
    assert "--allow-mismatch" in err.hint
    report = err.details["parity"]
    assert report["passed"] is False
    assert 1 <= len(report["worst"]) <= 5
    worst = report["worst"][0]
    assert (worst["output"], worst["index"]) == ("y", 3 * 2 + 1)
    assert worst["abs_error"] == pytest.approx(6.0, rel=1e-5)
    assert report["per_output"]["y"]["mismatched"] == 32


def test_allow_mismatch_returns_a_failed_report(model_path, sample):
    def shifted(inputs):
        return {"y": _linear(inputs)["y"] + 1.0}

    report = check_parity(shifted, model_path, sample, allow_mismatch=True)
    assert not report.passed
    assert report.max_abs_error == pytest.approx(1.0, rel=1e-5)


def test_errors_within_tolerance_pass(model_path, sample):
    def nudged(inputs):
        return {"y": _linear(inputs)["y"] + 5e-5}

    assert check_parity(nudged, model_path, sample, atol=1e-4, rtol=0).passed
    with pytest.raises(ParityCheckFailed):
        check_parity(nudged, model_path, sample, atol=1e-5, rtol=0)


def test_label_disagreement_fails(model_path, sample):
    from shipyard.convert.parity import run_onnx

    def wrong_labels(inputs):
        y = run_onnx(model_path, inputs)["y"].copy()
        y[2, 0] += 1.0
        return {"y": y}

    task = TaskSchema(task=TaskType.CLASSIFICATION, label_output="y")
    with pytest.raises(ParityCheckFailed, match="labels") as info:
        check_parity(wrong_labels, model_path, sample, task=task)
    report = info.value.details["parity"]
    assert report["label_agreement"] == pytest.approx(1 - 1 / 32)
    assert report["worst"][0]["index"] == 4


def test_generated_inputs_follow_the_signature():
    sig = Signature(
        inputs=(
            TensorSpec(name="image", dtype=DType.FP32, shape=(None, 8, 8, 3)),
            TensorSpec(name="tokens", dtype=DType.INT64, shape=(None, None)),
        ),
        outputs=(),
    )
    out = generate_inputs(sig, n_rows=16)
    assert out["image"].shape == (16, 8, 8, 3) and out["image"].dtype == np.float32
    assert out["tokens"].shape == (16, 4) and out["tokens"].dtype == np.int64

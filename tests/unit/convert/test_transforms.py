"""File transforms on tiny real models: outputs load in ONNX Runtime and stay close to fp32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from shipyard.convert import transforms as tf
from shipyard.errors import ConversionError, InvalidInputError


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A small random-weight CNN (conv-relu-pool x2, flatten, linear-relu-linear) and inputs."""
    import torch

    from shipyard.testing import make_cifar_cnn

    model = make_cifar_cnn((8, 16), hidden=32, classes=5, size=16, seed=0).eval()
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    with pytest.warns(DeprecationWarning, match="legacy TorchScript-based ONNX export"):
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 16, 16),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            dynamo=False,
        )
    x = np.random.default_rng(0).normal(size=(64, 3, 16, 16)).astype(np.float32)
    return path, x


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A scikit-learn MLP on digits, exported by skl2onnx (MatMul + Add + Relu), and inputs."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    with pytest.warns(Warning, match="Maximum iterations"):  # max_iter is too small on purpose
        clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=20, random_state=0).fit(x, y)
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    path.write_bytes(to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}).SerializeToString())
    return path, x[:200]


def _run(path: Path, x: np.ndarray, output: int = 0) -> Any:
    name = ort.InferenceSession(str(path)).get_inputs()[0].name
    return ort.InferenceSession(str(path)).run(None, {name: x})[output]


def _weights(path: Path) -> int:
    return sum(int(np.prod(i.dims)) for i in onnx.load(str(path)).graph.initializer)


def test_optimize_graph_saves_a_model_with_identical_outputs(cnn: Any, tmp_path: Path) -> None:
    src, x = cnn
    res = tf.optimize_graph(src, tmp_path / "g.onnx")
    assert res.technique == "ort-graph" and res.parameters == {"level": "extended"}
    np.testing.assert_allclose(_run(res.path, x), _run(src, x), atol=1e-5)


def test_optimize_graph_refuses_the_all_level(cnn: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="basic"):
        tf.optimize_graph(cnn[0], tmp_path / "g.onnx", level="all")  # type: ignore[arg-type]


def test_fp16_keeps_fp32_io_halves_the_file_and_stays_close(cnn: Any, tmp_path: Path) -> None:
    src, x = cnn
    res = tf.to_fp16(src, tmp_path / "h.onnx")
    sess = ort.InferenceSession(str(res.path))
    assert sess.get_inputs()[0].type == "tensor(float)"
    assert sess.get_outputs()[0].type == "tensor(float)"
    ref = _run(src, x)
    np.testing.assert_allclose(_run(res.path, x), ref, atol=1e-2 * np.abs(ref).max())
    assert res.path.stat().st_size < 0.6 * src.stat().st_size


def test_fp16_leaves_onnx_ml_ops_in_fp32(mlp: Any, tmp_path: Path) -> None:
    src, x = mlp
    res = tf.to_fp16(src, tmp_path / "h.onnx")
    assert "ArrayFeatureExtractor" in res.parameters["blocked_ops"]
    np.testing.assert_array_equal(_run(res.path, x, 0), _run(src, x, 0))


def test_dynamic_int8_is_smaller_and_close(cnn: Any, tmp_path: Path) -> None:
    src, x = cnn
    res = tf.quantize_dynamic(src, tmp_path / "d.onnx")
    ref = _run(src, x)
    assert np.abs(_run(res.path, x) - ref).max() < 0.1 * np.abs(ref).max()
    assert res.path.stat().st_size < 0.4 * src.stat().st_size


@pytest.mark.parametrize("method", tf.CALIBRATION_METHODS)
def test_static_int8_qdq_is_smaller_and_close(cnn: Any, tmp_path: Path, method: str) -> None:
    src, x = cnn
    res = tf.quantize_static(src, tmp_path / "s.onnx", {"x": x}, method=method)
    ops = {n.op_type for n in onnx.load(str(res.path)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert res.parameters["method"] == method and res.parameters["calibration_rows"] == 64
    ref = _run(src, x)
    assert np.abs(_run(res.path, x) - ref).max() < 0.15 * np.abs(ref).max()
    assert res.path.stat().st_size < 0.5 * src.stat().st_size


def test_static_int8_qoperator_writes_qlinear_ops(cnn: Any, tmp_path: Path) -> None:
    src, x = cnn
    res = tf.quantize_static(src, tmp_path / "s.onnx", {"x": x}, quant_format="qoperator")
    assert "QLinearConv" in {n.op_type for n in onnx.load(str(res.path)).graph.node}


def test_static_int8_falls_back_to_per_tensor_where_ort_cannot_do_per_channel(
    mlp: Any, tmp_path: Path
) -> None:
    src, x = mlp
    res = tf.quantize_static(src, tmp_path / "s.onnx", {"X": x})
    assert res.parameters["per_channel"] is False
    agree = np.mean(_run(res.path, x, 0) == _run(src, x, 0))
    assert agree > 0.9


def test_static_int8_rejects_bad_arguments(cnn: Any, tmp_path: Path) -> None:
    src, x = cnn
    with pytest.raises(InvalidInputError, match="Calibration method"):
        tf.quantize_static(src, tmp_path / "s.onnx", {"x": x}, method="kl")
    with pytest.raises(InvalidInputError, match="format"):
        tf.quantize_static(src, tmp_path / "s.onnx", {"x": x}, quant_format="int4")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="at least one row"):
        tf.quantize_static(src, tmp_path / "s.onnx", {"x": x[:0]})


def test_magnitude_pruning_zeroes_the_requested_share(cnn: Any, tmp_path: Path) -> None:
    src, x = cnn
    res = tf.prune_magnitude(src, tmp_path / "p.onnx", sparsity=0.5)
    assert res.details["tensors"] == 4
    assert 0.5 <= res.details["zero_fraction"] < 0.55
    weights = [
        numpy_helper.to_array(i)
        for i in onnx.load(str(res.path)).graph.initializer
        if len(i.dims) >= 2
    ]
    assert all(np.mean(w == 0) >= 0.5 for w in weights)
    out = _run(res.path, x)
    assert out.shape == _run(src, x).shape and not np.allclose(out, _run(src, x))


def test_magnitude_pruning_at_zero_sparsity_changes_nothing(cnn: Any, tmp_path: Path) -> None:
    src, x = cnn
    res = tf.prune_magnitude(src, tmp_path / "p.onnx", sparsity=0.0)
    np.testing.assert_array_equal(_run(res.path, x), _run(src, x))


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_pruning_rejects_shares_outside_zero_to_one(cnn: Any, tmp_path: Path, bad: float) -> None:
    with pytest.raises(InvalidInputError):
        tf.prune_magnitude(cnn[0], tmp_path / "p.onnx", sparsity=bad)
    with pytest.raises(InvalidInputError):
        tf.prune_channels(cnn[0], tmp_path / "p.onnx", fraction=bad)


def test_channel_pruning_shrinks_conv_and_linear_layers(cnn: Any, tmp_path: Path) -> None:
    src, x = cnn
    res = tf.prune_channels(src, tmp_path / "c.onnx", fraction=0.5)
    assert res.details["layers"] == {
        "/0/Conv": [8, 4],
        "/3/Conv": [16, 8],
        "/7/Gemm": [32, 16],
    }
    assert _weights(res.path) < 0.5 * _weights(src)
    out = _run(res.path, x)
    assert out.shape == (64, 5)
    assert res.path.stat().st_size < src.stat().st_size


def test_channel_pruning_at_small_share_is_close_to_fp32(cnn: Any, tmp_path: Path) -> None:
    src, x = cnn
    res = tf.prune_channels(src, tmp_path / "c.onnx", fraction=0.0)
    assert res.details["layers_pruned"] == 0
    np.testing.assert_allclose(_run(res.path, x), _run(src, x), atol=1e-6)


def test_channel_pruning_follows_matmul_add_chains(mlp: Any, tmp_path: Path) -> None:
    src, x = mlp
    res = tf.prune_channels(src, tmp_path / "c.onnx", fraction=0.25, multiple_of=1)
    assert sorted(res.details["layers"].values()) == [[16, 12], [32, 24]]
    assert _run(res.path, x, 1).shape == (200, 10)


def test_channel_pruning_leaves_a_single_layer_alone(tiny_onnx: Path, tmp_path: Path) -> None:
    res = tf.prune_channels(tiny_onnx, tmp_path / "c.onnx", fraction=0.5)
    assert res.details["layers_pruned"] == 0


def test_combination_prune_then_int8_loads(cnn: Any, tmp_path: Path) -> None:
    src, x = cnn
    pruned = tf.prune_channels(src, tmp_path / "c.onnx", fraction=0.25)
    res = tf.quantize_static(pruned.path, tmp_path / "cq.onnx", {"x": x})
    assert _run(res.path, x).shape == (64, 5)
    assert res.path.stat().st_size < 0.4 * src.stat().st_size


def test_transforms_refuse_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConversionError):
        tf.to_fp16(bad, tmp_path / "h.onnx")
    with pytest.raises(ConversionError):
        tf.optimize_graph(bad, tmp_path / "g.onnx")
    with pytest.raises(ConversionError):
        tf.quantize_dynamic(bad, tmp_path / "d.onnx")


def test_channel_pruning_rounds_kept_channels_to_the_kernel_block(mlp: Any, tmp_path: Path) -> None:
    src, _ = mlp
    res = tf.prune_channels(src, tmp_path / "c.onnx", fraction=0.25, multiple_of=16)
    # 32 -> 24 rounds back to 32 (nothing to gain), 16 is one block and is not rounded
    assert res.details["layers"] == {"MatMul1": [16, 12]}
    res = tf.prune_channels(src, tmp_path / "c.onnx", fraction=0.5, multiple_of=16)
    assert sorted(res.details["layers"].values()) == [[16, 8], [32, 16]]
    assert res.parameters == {"fraction": 0.5, "multiple_of": 16}
    with pytest.raises(InvalidInputError, match="multiple_of"):
        tf.prune_channels(src, tmp_path / "c.onnx", multiple_of=0)

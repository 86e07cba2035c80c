from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from shipyard.config import RuntimeSettings
from shipyard.errors import (
    InferenceError,
    ModelNotReady,
    RuntimeLoadError,
    ShipyardWarning,
    SignatureMismatch,
)
from shipyard.runtime import OnnxRuntime, RuntimeState
from shipyard.runtime.onnx import expand_providers
from shipyard.spec import DType, Signature, TensorSpec
from shipyard.testing import make_tiny_manifest, make_tiny_onnx_model

ONE_THREAD = RuntimeSettings(intra_op_threads=1)


@pytest.fixture
def runtime(tiny_onnx: Path) -> OnnxRuntime:
    rt = OnnxRuntime(ONE_THREAD)
    rt.load(tiny_onnx, make_tiny_manifest())
    return rt


def _direct(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_predict_matches_a_direct_onnxruntime_session(
    runtime: OnnxRuntime, tiny_onnx: Path
) -> None:
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    got = runtime.predict({"x": x})
    np.testing.assert_allclose(got["y"], _direct(tiny_onnx, x), rtol=1e-6)


def test_loading_from_bytes_and_from_a_path_give_the_same_predictions(tiny_onnx: Path) -> None:
    x = np.ones((2, 4), np.float32)
    from_bytes = OnnxRuntime(ONE_THREAD)
    from_bytes.load(tiny_onnx.read_bytes(), make_tiny_manifest())
    from_path = OnnxRuntime(ONE_THREAD)
    from_path.load(tiny_onnx, make_tiny_manifest())
    np.testing.assert_array_equal(
        from_bytes.predict({"x": x})["y"], from_path.predict({"x": x})["y"]
    )


def test_float64_and_int_inputs_are_cast_safely_to_fp32(runtime: OnnxRuntime) -> None:
    x = np.arange(8, dtype=np.int64).reshape(2, 4)
    expected = runtime.predict({"x": x.astype(np.float32)})["y"]
    np.testing.assert_array_equal(runtime.predict({"x": x})["y"], expected)
    np.testing.assert_array_equal(runtime.predict({"x": x.astype(np.float64)})["y"], expected)


def test_wrong_static_dimension_is_refused_with_the_expected_shape(runtime: OnnxRuntime) -> None:
    with pytest.raises(SignatureMismatch) as info:
        runtime.predict({"x": np.zeros((2, 5), np.float32)})
    assert str(info.value) == "Input 'x' must have shape (N, 4). Got (2, 5) instead."


def test_missing_batch_dimension_is_refused_with_a_hint(runtime: OnnxRuntime) -> None:
    with pytest.raises(SignatureMismatch) as info:
        runtime.predict({"x": np.zeros((4,), np.float32)})
    assert "must have shape (N, 4)" in str(info.value)
    assert info.value.hint == "Add a batch dimension."


def test_unknown_and_missing_input_names_are_listed(runtime: OnnxRuntime) -> None:
    with pytest.raises(SignatureMismatch) as info:
        runtime.predict({"features": np.zeros((1, 4), np.float32)})
    message = str(info.value)
    assert "Inputs must be named ['x']" in message
    assert "missing ['x']" in message
    assert "unknown ['features']" in message


def test_strings_for_a_float_input_are_refused_clearly(runtime: OnnxRuntime) -> None:
    with pytest.raises(SignatureMismatch, match="Input 'x' must be FP32"):
        runtime.predict({"x": np.full((1, 4), "1.5")})


def test_unknown_output_name_is_refused(runtime: OnnxRuntime) -> None:
    with pytest.raises(SignatureMismatch, match=r"among \['y'\]"):
        runtime.predict({"x": np.zeros((1, 4), np.float32)}, outputs=["z"])


def test_float_inputs_are_not_cast_to_an_int_input(tmp_path: Path) -> None:
    manifest = make_tiny_manifest()
    int_sig = Signature(
        inputs=(TensorSpec(name="x", dtype=DType.INT64, shape=(None, 4)),),
        outputs=manifest.signature.outputs,
    )
    rt = OnnxRuntime(ONE_THREAD)
    rt.load(
        make_tiny_onnx_model().SerializeToString(),
        manifest.model_copy(update={"signature": int_sig}),
    )
    with pytest.raises(SignatureMismatch, match="must be INT64"):
        rt.predict({"x": np.zeros((1, 4), np.float64)})


def test_engine_failures_become_inference_errors_with_the_cause(tmp_path: Path) -> None:
    # the manifest claims a dynamic feature dim, so our check passes and ORT refuses
    manifest = make_tiny_manifest()
    loose = Signature(
        inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, None)),),
        outputs=manifest.signature.outputs,
    )
    rt = OnnxRuntime(ONE_THREAD)
    rt.load(
        make_tiny_onnx_model().SerializeToString(), manifest.model_copy(update={"signature": loose})
    )
    with pytest.raises(InferenceError) as info:
        rt.predict({"x": np.zeros((1, 7), np.float32)})
    assert info.value.__cause__ is not None


def test_corrupt_bytes_raise_runtime_load_error(tmp_path: Path) -> None:
    rt = OnnxRuntime(ONE_THREAD)
    with pytest.raises(RuntimeLoadError) as info:
        rt.load(b"not an onnx model", make_tiny_manifest())
    assert info.value.__cause__ is not None
    assert not rt.ready
    assert rt.state is RuntimeState.FAILED


def test_missing_model_file_raises_runtime_load_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeLoadError, match="must exist"):
        OnnxRuntime(ONE_THREAD).load(tmp_path / "absent.onnx", make_tiny_manifest())


def test_manifest_naming_other_inputs_than_the_model_is_refused_at_load(tiny_onnx: Path) -> None:
    manifest = make_tiny_manifest()
    other = Signature(
        inputs=(TensorSpec(name="features", dtype=DType.FP32, shape=(None, 4)),),
        outputs=manifest.signature.outputs,
    )
    with pytest.raises(RuntimeLoadError, match=r"\['x'\]"):
        OnnxRuntime(ONE_THREAD).load(tiny_onnx, manifest.model_copy(update={"signature": other}))


def test_unload_drops_the_session_and_refuses_predict(runtime: OnnxRuntime) -> None:
    runtime.unload()
    assert not runtime.ready
    assert runtime.state is RuntimeState.UNLOADED
    assert runtime.providers == []
    assert runtime.session_options is None
    with pytest.raises(ModelNotReady):
        runtime.predict({"x": np.zeros((1, 4), np.float32)})


def test_thread_and_optimization_settings_reach_the_session(tiny_onnx: Path) -> None:
    rt = OnnxRuntime(
        RuntimeSettings(intra_op_threads=2, inter_op_threads=3, graph_optimization="basic")
    )
    rt.load(tiny_onnx, make_tiny_manifest())
    opts = rt.session_options
    assert opts.intra_op_num_threads == 2
    assert opts.inter_op_num_threads == 3
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert opts.execution_mode == ort.ExecutionMode.ORT_PARALLEL


def test_unavailable_provider_warns_and_falls_back_to_cpu(tiny_onnx: Path) -> None:
    rt = OnnxRuntime(RuntimeSettings(intra_op_threads=1, providers=("NoSuchExecutionProvider",)))
    with pytest.warns(ShipyardWarning, match="NoSuchExecutionProvider"):
        rt.load(tiny_onnx, make_tiny_manifest())
    assert rt.providers == ["CPUExecutionProvider"]
    assert rt.predict({"x": np.zeros((1, 4), np.float32)})["y"].shape == (1, 2)


def test_auto_providers_put_cuda_first_only_where_the_build_has_it() -> None:
    cpu, cuda = "CPUExecutionProvider", "CUDAExecutionProvider"
    assert expand_providers(("auto",), {cpu}) == [cpu]
    assert expand_providers(("auto",), {cpu, cuda}) == [cuda, cpu]
    assert expand_providers(("TensorrtExecutionProvider", "auto"), {cpu}) == [
        "TensorrtExecutionProvider",
        cpu,
    ]


def test_default_settings_load_on_what_this_machine_has(tiny_onnx: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never asks for a provider the build lacks
        rt = OnnxRuntime(RuntimeSettings(intra_op_threads=1))
        rt.load(tiny_onnx, make_tiny_manifest())
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert rt.providers[0] == ("CUDAExecutionProvider" if has_cuda else "CPUExecutionProvider")
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    expected = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    np.testing.assert_allclose(rt.predict({"x": x})["y"], expected, rtol=1e-3, atol=1e-4)

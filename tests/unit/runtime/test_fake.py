from __future__ import annotations

import numpy as np
import pytest

from shipyard.errors import InferenceError, InvalidInputError, ModelNotReady, SignatureMismatch
from shipyard.runtime import FakeRuntime
from shipyard.spec import DType, Signature, TensorSpec
from shipyard.testing import make_tiny_manifest


def test_fake_runtime_echoes_the_input_scaled_into_the_output_shape() -> None:
    rt = FakeRuntime(scale=2.0)
    rt.load(b"", make_tiny_manifest(n_features=4, n_outputs=2))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    y = rt.predict({"x": x})["y"]
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x[:, :2] * 2)


def test_fake_runtime_tiles_a_narrow_input_into_a_wider_output() -> None:
    rt = FakeRuntime()
    rt.load(b"", make_tiny_manifest(n_features=2, n_outputs=5))
    y = rt.predict({"x": np.array([[1.0, 2.0]], np.float32)})["y"]
    np.testing.assert_array_equal(y, [[1, 2, 1, 2, 1]])


def test_fake_runtime_fills_label_and_string_outputs() -> None:
    manifest = make_tiny_manifest()
    sig = Signature(
        inputs=manifest.signature.inputs,
        outputs=(
            TensorSpec(name="label", dtype=DType.INT64, shape=(None,)),
            TensorSpec(name="name", dtype=DType.BYTES, shape=(None, 1)),
        ),
    )
    rt = FakeRuntime()
    rt.load(b"", manifest.model_copy(update={"signature": sig}))
    out = rt.predict({"x": np.full((3, 4), 7, np.float32)})
    assert out["label"].tolist() == [7, 7, 7]
    assert out["name"].shape == (3, 1)
    assert out["name"].dtype == object


def test_fake_runtime_validates_inputs_like_a_real_runtime() -> None:
    rt = FakeRuntime()
    rt.load(b"", make_tiny_manifest())
    with pytest.raises(SignatureMismatch, match=r"must have shape \(N, 4\)"):
        rt.predict({"x": np.zeros((1, 3), np.float32)})


def test_fake_runtime_waits_its_latency_through_the_injected_sleep() -> None:
    slept: list[float] = []
    rt = FakeRuntime(latency_ms=25, sleep=slept.append)
    rt.load(b"", make_tiny_manifest())
    rt.predict({"x": np.zeros((1, 4), np.float32)})
    assert slept == [0.025]
    assert rt.calls == 1


def test_fake_runtime_fails_at_its_failure_rate_reproducibly() -> None:
    def failures(seed: int) -> list[bool]:
        rt = FakeRuntime(failure_rate=0.5, seed=seed)
        rt.load(b"", make_tiny_manifest())
        outcome = []
        for _ in range(200):
            try:
                rt.predict({"x": np.zeros((1, 4), np.float32)})
                outcome.append(False)
            except InferenceError:
                outcome.append(True)
        return outcome

    first = failures(3)
    assert first == failures(3)
    assert 60 < sum(first) < 140


def test_fake_runtime_always_fails_at_rate_one_and_refuses_before_load() -> None:
    rt = FakeRuntime(failure_rate=1.0)
    with pytest.raises(ModelNotReady):
        rt.predict({"x": np.zeros((1, 4), np.float32)})
    rt.load(b"", make_tiny_manifest())
    with pytest.raises(InferenceError):
        rt.predict({"x": np.zeros((1, 4), np.float32)})


@pytest.mark.parametrize("kwargs", [{"latency_ms": -1}, {"failure_rate": 1.5}])
def test_fake_runtime_refuses_impossible_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        FakeRuntime(**kwargs)

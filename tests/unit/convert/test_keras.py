from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from shipyard.convert import convert, detect_framework  # noqa: E402
from shipyard.errors import InvalidData  # noqa: E402
from shipyard.spec import TaskType  # noqa: E402


def mnist_cnn():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def cifar_cnn():
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def lstm_regressor():
    return keras.Sequential(
        [
            keras.Input((10, 3)),
            keras.layers.LSTM(8),
            keras.layers.Dense(1),
        ]
    )


BUILDERS = {
    "mnist": (mnist_cnn, (28, 28, 1), 10, "classification"),
    "cifar10": (cifar_cnn, (32, 32, 3), 10, "classification"),
    "lstm": (lstm_regressor, (10, 3), 1, "regression"),
}


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """Each architecture saved as model.keras and model.h5 in <tmp>/<arch>/."""
    keras.utils.set_random_seed(0)
    out = {}
    for name, (build, _, _, _) in BUILDERS.items():
        model = build()
        folder = tmp_path_factory.mktemp(name)
        model.save(folder / "model.keras")
        model.save(folder / "model.h5")
        out[name] = (model, folder)
    return out


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("arch", list(BUILDERS))
def test_saved_model_converts_with_dynamic_batch(saved_models, arch, suffix, workdir, ort_run):
    model, folder = saved_models[arch]
    _, shape, width, task = BUILDERS[arch]
    path = folder / f"model{suffix}"
    assert detect_framework(path) == "keras"
    rng = np.random.default_rng(1)
    sample = rng.random((3, *shape), dtype=np.float32)

    result = convert(path, workdir=workdir, sample_input=sample, task=task)

    nv = result.new_version
    assert nv.framework == "keras" and nv.framework_version == keras.__version__
    assert result.source_path == path
    assert [(i.name, i.shape) for i in nv.signature.inputs] == [("input", (None, *shape))]
    assert [(o.name, o.shape) for o in nv.signature.outputs] == [("output", (None, width))]
    assert nv.task.task is TaskType(task) and nv.task.scores_output == "output"
    assert nv.parity.passed and nv.parity.n_samples == 6
    held_out = rng.random((7, *shape), dtype=np.float32)
    got = ort_run(result.onnx_path, {"input": held_out})["output"]
    expected = keras.ops.convert_to_numpy(model(held_out, training=False))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


def test_in_memory_model_without_sample(workdir, ort_run):
    keras.utils.set_random_seed(0)
    model = mnist_cnn()

    result = convert(model, workdir=workdir)

    assert result.source_path is None
    assert result.new_version.task.task is TaskType.OTHER
    assert result.new_version.parity.sample_source == "generated"
    assert ort_run(result.onnx_path, {"input": np.zeros((1, 28, 28, 1), np.float32)})[
        "output"
    ].shape == (1, 10)


def test_broken_keras_file_is_invalid_data(tmp_path, workdir):
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(InvalidData, match="Keras"):
        convert(path, workdir=workdir)

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from shipyard.convert import convert, detect_framework
from shipyard.errors import DataNotFound, InvalidData, UnsafeArtifact
from shipyard.spec import DType, TaskType
from shipyard.testing import make_tiny_onnx_model


def test_plain_onnx_is_checked_and_run_once(tiny_onnx, workdir, ort_run):
    assert detect_framework(tiny_onnx) == "onnx"

    result = convert(tiny_onnx, workdir=workdir)

    nv = result.new_version
    assert result.source_path == tiny_onnx
    assert nv.framework == "onnx" and nv.opset == 17
    assert [(i.name, i.dtype, i.shape) for i in nv.signature.inputs] == [
        ("x", DType.FP32, (None, 4))
    ]
    assert [(o.name, o.shape) for o in nv.signature.outputs] == [("y", (None, 2))]
    assert nv.task.task is TaskType.OTHER
    assert nv.parity.passed and nv.parity.skipped_reason == "no source model"
    x = np.ones((3, 4), np.float32)
    np.testing.assert_allclose(
        ort_run(result.onnx_path, {"x": x})["y"], ort_run(tiny_onnx, {"x": x})["y"]
    )


def test_regression_task_and_user_sample(tiny_onnx, workdir):
    result = convert(tiny_onnx, workdir=workdir, task="regression", sample_input=np.ones((2, 4)))
    assert result.new_version.task.scores_output == "y"
    assert result.new_version.parity.sample_source == "user"


def _save_external(tmp_path, location="weights.bin"):
    """model.onnx + weights.bin in tmp_path/model/, then point the tensors at ``location``."""
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(
        make_tiny_onnx_model(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    if location != "weights.bin":
        model = onnx.load(str(path), load_external_data=False)
        for init in model.graph.initializer:
            for entry in init.external_data:
                if entry.key == "location":
                    entry.value = location
        path.write_bytes(model.SerializeToString())
    return path


def test_external_data_inside_the_folder_is_inlined(tmp_path, workdir, ort_run):
    path = _save_external(tmp_path)

    result = convert(path, workdir=workdir)

    assert not (workdir / "weights.bin").exists()
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(
        ort_run(result.onnx_path, {"x": x})["y"],
        ort_run(path, {"x": x})["y"],
    )


def test_external_data_with_absolute_path_is_unsafe(tmp_path, workdir):
    secret = tmp_path / "elsewhere.bin"
    secret.write_bytes(b"\0" * 64)
    path = _save_external(tmp_path, location=str(secret))
    with pytest.raises(UnsafeArtifact, match="absolute"):
        convert(path, workdir=workdir)


def test_external_data_with_dotdot_is_unsafe(tmp_path, workdir):
    (tmp_path / "elsewhere.bin").write_bytes(b"\0" * 64)
    path = _save_external(tmp_path, location="../elsewhere.bin")
    with pytest.raises(UnsafeArtifact, match=r"\.\."):
        convert(path, workdir=workdir)


def test_external_data_symlink_outside_is_unsafe(tmp_path, workdir):
    path = _save_external(tmp_path)
    outside = tmp_path / "outside.bin"
    (path.parent / "weights.bin").rename(outside)
    os.symlink(outside, path.parent / "weights.bin")
    with pytest.raises(UnsafeArtifact, match="symlink"):
        convert(path, workdir=workdir)


def test_missing_external_data_is_not_found(tmp_path, workdir):
    path = _save_external(tmp_path)
    (path.parent / "weights.bin").unlink()
    with pytest.raises(DataNotFound, match=r"weights\.bin"):
        convert(path, workdir=workdir)


def test_garbage_onnx_file_is_invalid_data(tmp_path, workdir):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\xff\xfe not a protobuf")
    with pytest.raises(InvalidData):
        convert(path, workdir=workdir)


def test_in_memory_model_proto(workdir):
    result = convert(make_tiny_onnx_model(n_features=3), workdir=workdir)
    assert result.source_path is None
    assert result.new_version.signature.inputs[0].shape == (None, 3)


def test_task_is_read_from_a_skl2onnx_classifier_file(iris, tmp_path, workdir):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression, LogisticRegression

    x_tr, _, y_tr, _ = iris
    labels = np.array(["a", "b", "c"])[y_tr]
    clf = LogisticRegression(max_iter=500).fit(x_tr, labels)
    path = tmp_path / "clf.onnx"
    onx = to_onnx(clf, x_tr[:1], options={id(clf): {"zipmap": False}})
    path.write_bytes(onx.SerializeToString())

    task = convert(path, workdir=workdir).new_version.task

    assert task.task is TaskType.CLASSIFICATION
    assert task.class_labels == ("a", "b", "c")
    assert (task.label_output, task.scores_output) == ("label", "probabilities")

    reg = LinearRegression().fit(x_tr, y_tr.astype(np.float32))
    path = tmp_path / "reg.onnx"
    path.write_bytes(to_onnx(reg, x_tr[:1]).SerializeToString())
    task = convert(path, workdir=workdir).new_version.task
    assert task.task is TaskType.REGRESSION and task.scores_output == "variable"

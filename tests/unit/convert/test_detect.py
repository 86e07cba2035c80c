from __future__ import annotations

import subprocess
import sys
import zipfile

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import shipyard.convert as convert_pkg
from shipyard.convert import FRAMEWORKS, convert, detect_framework
from shipyard.errors import (
    DataNotFound,
    InvalidInputError,
    MissingDependency,
    UnsafeArtifact,
    UnsupportedModel,
)


@pytest.fixture(scope="module")
def fitted(iris):
    x_tr, _, y_tr, _ = iris
    return LogisticRegression(max_iter=500).fit(x_tr, y_tr)


def _ruff_order(name):
    if name.upper() == name:
        return (0, name)
    return (1 if name[:1].isupper() else 2, name)


def test_public_api_is_sorted_and_importable():
    assert convert_pkg.__all__ == sorted(convert_pkg.__all__, key=_ruff_order)
    for name in convert_pkg.__all__:
        assert hasattr(convert_pkg, name)
    assert set(convert_pkg.CONVERTERS) == set(FRAMEWORKS)


def test_import_is_light():
    code = (
        "import sys, shipyard.convert; "
        "print(sorted(m for m in ('numpy', 'onnx', 'onnxruntime', 'torch', 'sklearn', 'keras',"
        " 'starlette', 'click') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_detects_in_memory_objects(fitted):
    import lightgbm as lgb
    import torch
    import xgboost as xgb

    from shipyard.testing import make_tiny_onnx_model

    assert detect_framework(fitted) == "sklearn"
    assert detect_framework(xgb.XGBRegressor()) == "xgboost"
    assert detect_framework(lgb.LGBMClassifier()) == "lightgbm"
    assert detect_framework(torch.nn.Linear(2, 2)) == "torch"
    assert detect_framework(torch.jit.script(torch.nn.Linear(2, 2))) == "torchscript"
    assert detect_framework(make_tiny_onnx_model()) == "onnx"


def test_detects_keras_objects():
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    assert detect_framework(model) == "keras"


def test_detects_files_by_extension_and_content(tmp_path, tiny_onnx):
    assert detect_framework(tiny_onnx) == "onnx"
    pkl = tmp_path / "m.joblib"
    pkl.write_bytes(b"x")
    assert detect_framework(pkl) == "pickle"
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    assert detect_framework(saved) == "tensorflow"
    lgb_txt = tmp_path / "weird-name.model"
    lgb_txt.write_text("tree\nversion=v4\n")
    assert detect_framework(lgb_txt) == "lightgbm"
    xgb_json = tmp_path / "m.json"
    xgb_json.write_text('{"learner": {}, "version": [2, 0, 0]}')
    assert detect_framework(xgb_json) == "xgboost"


def test_torch_save_pickles_are_unsupported(tmp_path):
    import torch

    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(UnsupportedModel, match="TorchScript"):
        detect_framework(path)


def test_unknown_files_and_objects_are_unsupported(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(UnsupportedModel) as info:
        detect_framework(path)
    assert "scikit-learn" in info.value.hint
    with pytest.raises(UnsupportedModel, match="cannot convert"):
        detect_framework(object())
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(UnsupportedModel, match="SavedModel"):
        detect_framework(folder)
    zipped = tmp_path / "archive.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("readme.md", "hi")
    with pytest.raises(UnsupportedModel):
        detect_framework(zipped)


def test_missing_file_is_not_found(tmp_path, workdir):
    with pytest.raises(DataNotFound):
        convert(tmp_path / "nope.onnx", workdir=workdir)


def test_framework_override_and_bad_names(fitted, workdir, tiny_onnx):
    result = convert(fitted, workdir=workdir, framework="sklearn")
    assert result.new_version.framework == "sklearn"
    with pytest.raises(UnsupportedModel, match="framework"):
        convert(fitted, workdir=workdir, framework="caffe")
    with pytest.raises(UnsupportedModel, match="pass the model object"):
        convert(tiny_onnx, workdir=workdir, framework="torch")
    with pytest.raises(InvalidInputError, match="task"):
        convert(fitted, workdir=workdir, task="ranking")
    with pytest.raises(InvalidInputError, match="atol"):
        convert(fitted, workdir=workdir, atol=-1)


def test_pickle_needs_trust(fitted, tmp_path, workdir, iris):
    path = tmp_path / "model.pkl"
    joblib.dump(fitted, path)

    with pytest.raises(UnsafeArtifact) as info:
        convert(path, workdir=workdir)
    assert info.value.hint == "pass --trust-pickle only if you trust the file's author"

    result = convert(path, workdir=workdir, trust_pickle=True, sample_input=iris[0][:10])
    assert result.source_path == path
    assert result.new_version.framework == "sklearn"
    assert result.new_version.parity.passed


def test_in_memory_source_has_no_source_path(fitted, workdir):
    assert convert(fitted, workdir=workdir).source_path is None


def test_tensorflow_needs_the_tf_extra(tmp_path, workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    with pytest.raises(MissingDependency) as info:
        convert(saved, workdir=workdir)
    assert "shipyard[tf]" in info.value.hint


@pytest.mark.parametrize(
    ("module", "extra", "make"),
    [
        ("skl2onnx", "sklearn", lambda: LogisticRegression().fit(np.eye(2), [0, 1])),
        ("onnxmltools", "boost", lambda: __import__("xgboost").XGBRegressor()),
    ],
)
def test_missing_framework_names_the_extra(monkeypatch, workdir, module, extra, make):
    model = make()
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependency) as info:
        convert(model, workdir=workdir)
    assert f"shipyard[{extra}]" in info.value.hint

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shipyard.convert import convert, detect_framework
from shipyard.errors import InvalidData
from shipyard.spec import TaskType


@pytest.fixture(scope="module")
def xgb_clf(iris):
    x_tr, _, y_tr, _ = iris
    return xgb.XGBClassifier(n_estimators=8, max_depth=2, n_jobs=1).fit(x_tr, y_tr)


@pytest.fixture(scope="module")
def lgb_clf(iris):
    x_tr, _, y_tr, _ = iris
    return lgb.LGBMClassifier(n_estimators=8, num_leaves=4, n_jobs=1, verbose=-1).fit(x_tr, y_tr)


def _assert_classifier(result, framework, x_te, expected_labels, expected_proba, ort_run):
    nv = result.new_version
    assert nv.framework == framework
    assert nv.parity.passed and nv.parity.label_agreement == 1.0
    assert nv.task.task is TaskType.CLASSIFICATION
    assert nv.task.class_labels == (0, 1, 2)
    assert (nv.task.label_output, nv.task.scores_output) == ("label", "probabilities")
    assert [(o.name, o.shape) for o in nv.signature.outputs] == [
        ("label", (None,)),
        ("probabilities", (None, 3)),
    ]
    got = ort_run(result.onnx_path, {"input": x_te})
    np.testing.assert_array_equal(got["label"], expected_labels)
    np.testing.assert_allclose(got["probabilities"], expected_proba, atol=1e-5)


def test_xgboost_classifier(iris, xgb_clf, workdir, ort_run):
    x_tr, x_te, _, _ = iris
    result = convert(xgb_clf, workdir=workdir, sample_input=x_tr[:40])
    assert result.new_version.framework_version == xgb.__version__
    _assert_classifier(
        result, "xgboost", x_te, xgb_clf.predict(x_te), xgb_clf.predict_proba(x_te), ort_run
    )


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_native_file(iris, xgb_clf, tmp_path, workdir, ort_run, suffix):
    x_tr, x_te, _, _ = iris
    path = tmp_path / f"model{suffix}"
    xgb_clf.save_model(path)
    assert detect_framework(path) == "xgboost"

    result = convert(path, workdir=workdir, sample_input=x_tr[:40])

    assert result.source_path == path
    _assert_classifier(
        result, "xgboost", x_te, xgb_clf.predict(x_te), xgb_clf.predict_proba(x_te), ort_run
    )


def test_xgboost_regressor_with_dataframe_names(diabetes, workdir, ort_run):
    x_tr, x_te, y_tr, _ = diabetes
    cols = [f"x{i}" for i in range(10)]
    model = xgb.XGBRegressor(n_estimators=8, max_depth=3, n_jobs=1).fit(
        pd.DataFrame(x_tr, columns=cols), y_tr
    )

    result = convert(model, workdir=workdir, sample_input=x_tr[:30], rtol=1e-4)

    nv = result.new_version
    assert nv.task.task is TaskType.REGRESSION and nv.task.scores_output == "prediction"
    assert nv.task.feature_names == tuple(cols)
    assert model.get_booster().feature_names == cols  # the caller's model is untouched
    got = ort_run(result.onnx_path, {"input": x_te})["prediction"].reshape(-1)
    np.testing.assert_allclose(got, model.predict(pd.DataFrame(x_te, columns=cols)), rtol=1e-4)


def test_lightgbm_classifier(iris, lgb_clf, workdir, ort_run):
    x_tr, x_te, _, _ = iris
    result = convert(lgb_clf, workdir=workdir, sample_input=x_tr[:40])
    _assert_classifier(
        result, "lightgbm", x_te, lgb_clf.predict(x_te), lgb_clf.predict_proba(x_te), ort_run
    )


def test_lightgbm_native_text_file(iris, lgb_clf, tmp_path, workdir, ort_run):
    x_tr, x_te, _, _ = iris
    path = tmp_path / "model.txt"
    lgb_clf.booster_.save_model(str(path))
    assert detect_framework(path) == "lightgbm"

    result = convert(path, workdir=workdir, sample_input=x_tr[:40])

    assert result.source_path == path
    assert result.new_version.task.feature_names is None
    _assert_classifier(
        result, "lightgbm", x_te, lgb_clf.predict(x_te), lgb_clf.predict_proba(x_te), ort_run
    )


def test_lightgbm_regressor_native_booster(diabetes, workdir, ort_run):
    x_tr, x_te, y_tr, _ = diabetes
    booster = lgb.train(
        {"objective": "regression", "num_leaves": 4, "verbose": -1, "num_threads": 1},
        lgb.Dataset(x_tr, y_tr),
        num_boost_round=8,
    )

    result = convert(booster, workdir=workdir, sample_input=x_tr[:30])

    nv = result.new_version
    assert nv.framework == "lightgbm"
    assert nv.task.task is TaskType.REGRESSION
    got = ort_run(result.onnx_path, {"input": x_te})["prediction"].reshape(-1)
    np.testing.assert_allclose(got, booster.predict(x_te), rtol=1e-4)


def test_pipeline_with_xgboost_step(iris, workdir):
    x_tr, _, y_tr, _ = iris
    model = make_pipeline(
        StandardScaler(), xgb.XGBClassifier(n_estimators=4, max_depth=2, n_jobs=1)
    ).fit(x_tr, y_tr)

    result = convert(model, workdir=workdir, sample_input=x_tr[:40], opset=15)

    assert result.new_version.framework == "sklearn"
    assert result.new_version.parity.passed


def test_unreadable_xgboost_file_is_invalid_data(tmp_path, workdir):
    path = tmp_path / "model.ubj"
    path.write_bytes(b"{garbage")
    with pytest.raises(InvalidData):
        convert(path, workdir=workdir)

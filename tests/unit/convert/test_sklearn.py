from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from shipyard.convert import convert
from shipyard.errors import InvalidInputError, UnsupportedModel
from shipyard.spec import DType, TaskType


def test_pipeline_classifier_outputs_label_and_probabilities(iris, workdir, ort_run):
    x_tr, x_te, y_tr, _ = iris
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x_tr, y_tr)

    result = convert(model, workdir=workdir, sample_input=x_tr[:32])

    nv = result.new_version
    assert result.onnx_path == workdir / "model.onnx"
    assert result.source_path is None
    assert nv.framework == "sklearn"
    assert nv.framework_version
    assert nv.opset is not None and nv.opset >= 9
    (inp,) = nv.signature.inputs
    assert (inp.name, inp.dtype, inp.shape) == ("input", DType.FP32, (None, 4))
    outs = {o.name: o for o in nv.signature.outputs}
    assert outs["label"].shape == (None,)
    assert outs["probabilities"].shape == (None, 3)
    assert nv.task.task is TaskType.CLASSIFICATION
    assert nv.task.class_labels == (0, 1, 2)
    assert (nv.task.label_output, nv.task.scores_output) == ("label", "probabilities")
    assert nv.task.feature_names is None
    assert nv.parity is not None and nv.parity.passed
    assert nv.parity.label_agreement == 1.0
    assert nv.parity.sample_source == "user"

    got = ort_run(result.onnx_path, {"input": x_te})
    np.testing.assert_array_equal(got["label"], model.predict(x_te))
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(x_te), atol=1e-5)


def test_string_labels_and_dataframe_feature_names(iris, workdir, ort_run):
    x_tr, x_te, y_tr, _ = iris
    names = ["sepal_l", "sepal_w", "petal_l", "petal_w"]
    labels = np.array(["setosa", "versicolor", "virginica"])[y_tr]
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(
        pd.DataFrame(x_tr, columns=names), labels
    )

    result = convert(model, workdir=workdir)  # no sample: generated rows

    task = result.new_version.task
    assert task.class_labels == ("setosa", "versicolor", "virginica")
    assert task.feature_names == tuple(names)
    assert result.new_version.parity.sample_source == "generated"
    got = ort_run(result.onnx_path, {"input": x_te})
    with pytest.warns(UserWarning, match="feature names"):
        expected = model.predict(x_te)
    np.testing.assert_array_equal(got["label"].astype(str), expected)


def test_regressor_outputs_prediction(diabetes, workdir, ort_run):
    x_tr, x_te, y_tr, _ = diabetes
    model = make_pipeline(StandardScaler(), LinearRegression()).fit(x_tr, y_tr)

    result = convert(
        model, workdir=workdir, sample_input=x_tr[:20], feature_names=list("abcdefghij")
    )

    nv = result.new_version
    assert nv.task.task is TaskType.REGRESSION
    assert nv.task.scores_output == "prediction"
    assert nv.task.label_output is None
    assert nv.task.feature_names == tuple("abcdefghij")
    assert [(o.name, o.shape) for o in nv.signature.outputs] == [("prediction", (None, 1))]
    got = ort_run(result.onnx_path, {"input": x_te})["prediction"]
    np.testing.assert_allclose(got.reshape(-1), model.predict(x_te), rtol=1e-4)


def test_named_input_is_kept(iris, workdir):
    x_tr, _, y_tr, _ = iris
    model = LogisticRegression(max_iter=500).fit(x_tr, y_tr)

    result = convert(model, workdir=workdir, sample_input={"features": x_tr[:8]})

    assert [i.name for i in result.new_version.signature.inputs] == ["features"]


def test_unfitted_model_is_unsupported(workdir):
    with pytest.raises(UnsupportedModel, match="fitted"):
        convert(LogisticRegression(), workdir=workdir)


def test_class_labels_must_match_the_model(iris, workdir):
    x_tr, _, y_tr, _ = iris
    model = LogisticRegression(max_iter=500).fit(x_tr, y_tr)
    with pytest.raises(InvalidInputError, match="class_labels"):
        convert(model, workdir=workdir, class_labels=["a", "b", "c"])


def test_sample_with_wrong_width_is_rejected(iris, workdir):
    x_tr, _, y_tr, _ = iris
    model = LogisticRegression(max_iter=500).fit(x_tr, y_tr)
    with pytest.raises(InvalidInputError, match="4 columns"):
        convert(model, workdir=workdir, sample_input=x_tr[:5, :3])


def test_explicit_opset_is_recorded(iris, workdir):
    x_tr, _, y_tr, _ = iris
    model = LogisticRegression(max_iter=500).fit(x_tr, y_tr)
    result = convert(model, workdir=workdir, opset=15, sample_input=x_tr[:10])
    assert result.new_version.opset == 15


def test_corrupted_reference_fails_parity(iris, workdir):
    from shipyard.convert import check_parity
    from shipyard.errors import ParityCheckFailed

    x_tr, _, y_tr, _ = iris
    model = LogisticRegression(max_iter=500).fit(x_tr, y_tr)
    result = convert(model, workdir=workdir, sample_input=x_tr[:16])

    def off_by_one(inputs):
        return {"probabilities": model.predict_proba(inputs["input"]) + 1.0}

    with pytest.raises(ParityCheckFailed, match="probabilities") as info:
        check_parity(off_by_one, result.onnx_path, {"input": x_tr[:16]})
    assert len(info.value.details["parity"]["worst"]) == 5
    report = check_parity(off_by_one, result.onnx_path, {"input": x_tr[:16]}, allow_mismatch=True)
    assert not report.passed

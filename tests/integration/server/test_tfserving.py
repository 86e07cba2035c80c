"""TF Serving REST examples (from its REST API documentation) against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from shipyard.registry import ModelRegistry
from shipyard.spec import DType, NewVersion, Signature, TaskSchema, TaskType, TensorSpec

from .conftest import RunningServer, register_tiny, server_settings, start_server, stop_server

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def _register_iris(reg: ModelRegistry, tmp: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    path = tmp / "iris.onnx"
    path.write_bytes(to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}).SerializeToString())
    sig = Signature(
        inputs=(TensorSpec(name="X", dtype=DType.FP32, shape=(None, 4)),),
        outputs=(
            TensorSpec(name="label", dtype=DType.INT64, shape=(None,)),
            TensorSpec(name="probabilities", dtype=DType.FP32, shape=(None, 3)),
        ),
    )
    task = TaskSchema(
        task=TaskType.CLASSIFICATION,
        class_labels=(0, 1, 2),
        label_output="label",
        scores_output="probabilities",
        feature_names=FEATURES,
    )
    reg.register(
        "iris", NewVersion(signature=sig, task=task, framework="sklearn"), {"model.onnx": path}
    )


def _register_linear(reg: ModelRegistry, tmp: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    reg_model = LinearRegression().fit(x, x @ np.array([2.0, -1.0]) + 0.5)
    path = tmp / "lin.onnx"
    path.write_bytes(to_onnx(reg_model, x[:1]).SerializeToString())
    sig = Signature(
        inputs=(TensorSpec(name="X", dtype=DType.FP32, shape=(None, 2)),),
        outputs=(TensorSpec(name="variable", dtype=DType.FP32, shape=(None, 1)),),
    )
    task = TaskSchema(task=TaskType.REGRESSION, scores_output="variable", feature_names=("a", "b"))
    reg.register(
        "lin", NewVersion(signature=sig, task=task, framework="sklearn"), {"model.onnx": path}
    )


@pytest.fixture
def tfs(home: Path, tmp_path: Path) -> Iterator[RunningServer]:
    settings = server_settings(home)
    reg = ModelRegistry.open(settings)
    _register_iris(reg, tmp_path)
    _register_linear(reg, tmp_path)
    register_tiny(reg, tmp_path, "tiny")
    reg.promote("tiny:1", "stable")
    reg.close()
    server = start_server(["iris", "lin", "tiny", "tiny@stable"], settings)
    yield server
    stop_server(server)


def test_status_and_metadata(tfs: RunningServer) -> None:
    with httpx.Client(base_url=tfs.http) as c:
        status = c.get("/v1/models/iris").json()
        assert status["model_version_status"][0] == {
            "version": "1",
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
        assert c.get("/v1/models/iris/versions/1").status_code == 200
        meta = c.get("/v1/models/iris/metadata").json()
        sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert sig["inputs"]["X"]["dtype"] == "DT_FLOAT"
        assert sig["inputs"]["X"]["tensor_shape"]["dim"][1]["size"] == "4"
        assert (
            c.get("/v1/models/tiny/labels/stable/metadata").json()["model_spec"]["version"] == "1"
        )


def test_predict_row_and_columnar_forms(tfs: RunningServer) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    with httpx.Client(base_url=tfs.http) as c:
        r = c.post(
            "/v1/models/iris:predict", json={"signature_name": "serving_default", "instances": rows}
        )
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["label"] for p in preds] == [0, 2]
        assert len(preds[0]["probabilities"]) == 3
        r = c.post("/v1/models/iris/versions/1:predict", json={"inputs": {"X": rows}})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"]["label"] == [0, 2]
        r = c.post("/v1/models/tiny:predict", json={"instances": [[1, 2, 3, 4]]})
        assert np.asarray(r.json()["predictions"]).shape == (1, 2)


def test_predict_accepts_nan_tokens(tfs: RunningServer) -> None:
    body = b'{"instances": [[NaN, 1.0, Infinity, -Infinity]]}'
    with httpx.Client(base_url=tfs.http) as c:
        r = c.post(
            "/v1/models/tiny:predict", content=body, headers={"content-type": "application/json"}
        )
    assert r.status_code == 200, r.text


def test_classify_and_regress(tfs: RunningServer) -> None:
    examples = [dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2], strict=True))]
    with httpx.Client(base_url=tfs.http) as c:
        r = c.post("/v1/models/iris:classify", json={"examples": examples})
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert [lab for lab, _ in result[0]] == ["0", "1", "2"]
        assert max(result[0], key=lambda p: p[1])[0] == "0"
        r = c.post(
            "/v1/models/lin:regress",
            json={"context": {"b": 0.0}, "examples": [{"a": 1.0}, {"a": 2.0}]},
        )
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["result"], [2.5, 4.5], rtol=1e-4)
        r = c.post("/v1/models/lin:classify", json={"examples": [{"a": 1.0, "b": 0.0}]})
        assert r.status_code == 400
        assert "classification" in r.json()["error"]


def test_errors_use_the_error_key(tfs: RunningServer) -> None:
    with httpx.Client(base_url=tfs.http) as c:
        r = c.get("/v1/models/ghost")
        assert r.status_code == 404
        assert r.json()["error"]
        r = c.post("/v1/models/iris:predict", json={"instances": [[1.0, 2.0]]})
        assert r.status_code == 400
        assert "shape" in r.json()["error"]
        r = c.post("/v1/models/iris:explode", json={})
        assert r.status_code == 404

"""`shipyard monitor set-reference` and drift in `monitor status`, through the real CLI.

Real registry files, real ONNX Runtime for the predictions, and a real prediction log
written by the same writer the server uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shipyard.cli.main import main
from shipyard.config import load_settings
from shipyard.monitoring.predlog import PredictionLog
from shipyard.registry import ModelRegistry
from shipyard.runtime.onnx import OnnxRuntime


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _iris(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """``n`` iris-like rows: real rows resampled, with a little noise (and a shift of f2)."""
    from sklearn.datasets import load_iris

    x = load_iris().data
    rng = np.random.default_rng(seed)
    rows = x[rng.integers(0, len(x), n)] + rng.normal(0, 0.05, (n, 4))
    rows[:, 2] += shift
    return rows.astype(np.float32)


def _csv(path: Path, x: np.ndarray, names: list[str], target: np.ndarray | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    cols = {name: x[:, i] for i, name in enumerate(names)}
    if target is not None:
        cols["species"] = target
    pacsv.write_csv(pa.table(cols), path)
    return path


@pytest.fixture
def iris(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> str:
    """`iris` registered from a skl2onnx logistic regression (label + probabilities)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(x.astype(np.float32), y)
    onx = to_onnx(clf, x[:1].astype(np.float32), options={id(clf): {"zipmap": False}})
    path = tmp_path / "iris.onnx"
    path.write_bytes(onx.SerializeToString())
    code, _, err = run(capsys, "models", "register", str(path), "--name", "iris")
    assert code == 0, err
    return "iris"


def _serve_offline(home: Path, x: np.ndarray, batch: int = 250) -> None:
    """Log predictions of iris:1 on ``x`` as the server would: real runtime, real log."""
    settings = load_settings({"home": str(home)})
    reg = ModelRegistry.open(settings)
    try:
        mv = reg.get("iris:1")
        runtime = OnnxRuntime(settings.runtime)
        runtime.load(reg.read_artifact(mv), mv.manifest)
        log = PredictionLog(settings.monitoring_dir, settings.monitoring)
        name = mv.manifest.signature.inputs[0].name
        for i in range(0, len(x), batch):
            xb = x[i : i + batch]
            log.record(f"r{i}", "iris", "1", {name: xb}, runtime.predict({name: xb}), 0.001)
        log.flush()
        runtime.unload()
    finally:
        reg.close()


def _status(capsys: pytest.CaptureFixture[str]) -> dict:
    code, out, err = run(capsys, "monitor", "status", "iris", "--json")
    assert code == 0, err
    return json.loads(out)["versions"]["1"]


def test_set_reference_then_status_shows_drift_only_on_shifted_traffic(
    capsys: pytest.CaptureFixture[str],
    iris: str,
    tmp_path: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ["sl", "sw", "pl", "pw"]
    ref_x = _iris(3000, seed=1)
    data = _csv(tmp_path / "ref.csv", ref_x, names, target=np.zeros(len(ref_x), dtype=int))
    code, out, err = run(
        capsys, "monitor", "set-reference", "iris", "--data", str(data), "--target", "species",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    stored = json.loads(out)
    assert stored["ref"] == "iris:1" and stored["rows"] == 3000
    assert stored["features"] == names  # named by the file's columns
    assert stored["prediction_output"] == "probabilities"
    assert Path(stored["path"]) == home / "monitoring" / "references" / "iris" / "1.ref"
    assert Path(stored["path"]).is_file()

    no_traffic = _status(capsys)["drift"]
    assert no_traffic["n_current"] == 0 and no_traffic["reference"]["rows"] == 3000

    # thresholds come from settings: a strict KS level keeps chance findings away
    monkeypatch.setenv("SHIPYARD_MONITORING__DRIFT_KS_P_VALUE", "0.001")
    monkeypatch.setenv("SHIPYARD_MONITORING__DRIFT_WINDOW", "2000")
    _serve_offline(home, _iris(2000, seed=2))
    quiet = _status(capsys)
    drift = quiet["drift"]
    assert drift["n_current"] == 2000 and drift["thresholds"]["ks_p_value"] == 0.001
    assert drift["drifted_features"] == [] and drift["share_drifted"] == 0.0
    assert drift["prediction_drifted"] is False
    assert {r["feature"] for r in drift["features"]} == set(names)
    assert all(r["drifted"] is False for r in drift["features"])
    assert quiet["estimated"]["available"] and quiet["estimated"]["n"] == 2000

    _serve_offline(home, _iris(2000, seed=3, shift=2.0))  # petal length moves
    loud = _status(capsys)["drift"]
    assert loud["drifted_features"] == ["pl"]
    assert [r["drifted"] for r in loud["features"] if r["feature"] == "pl"] == [True, True]
    assert loud["prediction_drifted"] is True
    code, out, _ = run(capsys, "monitor", "status", "iris")  # the table renders
    assert code == 0 and "DRIFT" in out and "drifted features" in out


def test_evaluate_stores_its_data_as_the_reference_when_there_is_none(
    capsys: pytest.CaptureFixture[str], iris: str, tmp_path: Path, home: Path
) -> None:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    data = _csv(tmp_path / "eval.csv", x.astype(np.float32), ["a", "b", "c", "d"], y)
    code, _, err = run(capsys, "evaluate", "iris", "--data", str(data), "--target", "species")
    assert code == 0, err
    ref = _status(capsys)["drift"]["reference"]
    assert ref["how"] == "evaluate" and ref["rows"] == 150 and ref["features"] == list("abcd")
    # an explicit reference replaces it; a later evaluate leaves that one alone
    other = _csv(tmp_path / "other.csv", _iris(500, seed=4), ["a", "b", "c", "d"])
    assert run(capsys, "monitor", "set-reference", "iris:1", "--data", str(other))[0] == 0
    assert run(capsys, "evaluate", "iris", "--data", str(data), "--target", "species")[0] == 0
    ref = _status(capsys)["drift"]["reference"]
    assert ref["how"] == "set-reference" and ref["rows"] == 500


def test_status_without_a_reference_says_how_to_set_one(
    capsys: pytest.CaptureFixture[str], iris: str
) -> None:
    drift = _status(capsys)["drift"]
    assert drift == {"reference": None, "hint": "shipyard monitor set-reference iris:1 --data FILE"}
    code, out, _ = run(capsys, "monitor", "status", "iris")
    assert code == 0 and "shipyard monitor set-reference iris:1" in out


@pytest.mark.parametrize(
    ("args", "exit_code", "code"),
    [
        (["iris", "--data", "missing.csv"], 3, "data-not-found"),
        (["ghost", "--data", "ok.csv"], 3, "model-not-found"),
        (["../evil", "--data", "ok.csv"], 5, "invalid-name"),
        (["iris", "--data", "three.csv"], 5, "signature-mismatch"),
        (["iris", "--data", "ok.txt"], 5, "invalid-data"),
    ],
)
def test_bad_set_reference_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
    iris: str,
    tmp_path: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    exit_code: int,
    code: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "ok.csv", _iris(20, seed=5), ["a", "b", "c", "d"])
    _csv(tmp_path / "three.csv", _iris(20, seed=5)[:, :3], ["a", "b", "c"])
    (tmp_path / "ok.txt").write_text("a,b\n")
    got, _, err = run(capsys, "monitor", "set-reference", *args)
    assert got == exit_code, err
    assert f"error[{code}]" in err and "Traceback" not in err
    assert not (home / "monitoring" / "references").exists()

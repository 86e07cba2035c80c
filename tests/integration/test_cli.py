"""The CLI end to end: real registry files, real conversions, real ONNX Runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shipyard.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def iris_csv(tmp_path: Path) -> Path:
    """iris as CSV: four float feature columns and an int `species` column."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from sklearn.datasets import load_iris

    data = load_iris()
    cols = {f"f{i}": data.data[:, i] for i in range(4)}
    cols["species"] = data.target
    path = tmp_path / "iris.csv"
    pacsv.write_csv(pa.table(cols), path)
    return path


@pytest.fixture
def iris_onnx(tmp_path: Path) -> Path:
    """A logistic regression on iris, exported by skl2onnx (label + probabilities)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(x.astype(np.float32), y)
    onx = to_onnx(clf, x[:1].astype(np.float32), options={id(clf): {"zipmap": False}})
    path = tmp_path / "iris.onnx"
    path.write_bytes(onx.SerializeToString())
    return path


def test_register_list_show_round_trip_in_json(
    capsys: pytest.CaptureFixture[str], tiny_onnx: Path
) -> None:
    code, out, err = run(capsys, "models", "register", str(tiny_onnx), "--name", "tiny", "--json")
    assert code == 0, err
    registered = json.loads(out)
    assert registered["ref"] == "tiny:1"
    assert registered["aliases"] == ["default"]

    code, out, _ = run(capsys, "--json", "models", "list")
    assert code == 0
    listed = json.loads(out)
    assert [m["name"] for m in listed] == ["tiny"]

    code, out, _ = run(capsys, "models", "show", "tiny", "--json")
    shown = json.loads(out)
    assert shown["version"] == 1
    sig = shown["manifest"]["signature"]
    assert sig["inputs"][0]["name"] == "x"
    assert sig["inputs"][0]["shape"] == [None, 4]

    code, out, _ = run(capsys, "models", "show", "tiny")
    assert code == 0
    assert "tiny:1" in out and "x: FP32 [-1, 4]" in out


def test_unknown_model_exits_3_with_code_and_hint(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "models", "show", "ghost")
    assert code == 3
    assert "error[model-not-found]" in err
    assert "hint:" in err
    assert "Traceback" not in err


def test_verbose_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-v", "models", "show", "ghost")
    assert code == 3
    assert "Traceback" in err


def test_invalid_name_exits_5_and_stores_nothing(
    capsys: pytest.CaptureFixture[str], tiny_onnx: Path
) -> None:
    code, _, err = run(capsys, "models", "register", str(tiny_onnx), "--name", "Bad/Name")
    assert code == 5
    assert "error[invalid-name]" in err
    code, out, _ = run(capsys, "--json", "models", "list")
    assert json.loads(out) == []


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "models", "register")
    assert code == 2


def test_pickle_is_refused_without_trust_pickle(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    path = tmp_path / "clf.joblib"
    joblib.dump(LogisticRegression(max_iter=300).fit(x, y), path)
    code, _, err = run(capsys, "models", "register", str(path), "--name", "iris")
    assert code == 5
    assert "error[unsafe-artifact]" in err
    assert "--trust-pickle" in err
    code, out, err = run(
        capsys, "models", "register", str(path), "--name", "iris", "--trust-pickle", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["manifest"]["framework"] == "sklearn"


def test_alias_rollback_history_and_guarded_delete(
    capsys: pytest.CaptureFixture[str], tiny_onnx: Path
) -> None:
    for _ in range(3):
        assert run(capsys, "models", "register", str(tiny_onnx), "--name", "m")[0] == 0
    assert run(capsys, "models", "alias", "m:1", "prod")[0] == 0
    assert run(capsys, "models", "promote", "m:3", "--to", "prod")[0] == 0
    code, out, _ = run(capsys, "models", "rollback", "m", "--alias", "prod")
    assert code == 0 and "-> 1" in out
    code, out, _ = run(capsys, "models", "history", "m", "--alias", "prod", "--json")
    moves = [(e["old_version"], e["new_version"]) for e in json.loads(out)]
    assert moves == [(None, 1), (1, 3), (3, 1)]

    code, _, err = run(capsys, "models", "rm", "m@prod")
    assert code == 4
    assert "error[alias-in-use]" in err
    assert run(capsys, "models", "rm", "m:2")[0] == 0
    code, _, err = run(capsys, "models", "show", "m:2")
    assert code == 3 and "version-not-found" in err
    assert run(capsys, "models", "unalias", "m", "prod")[0] == 0
    code, _, err = run(capsys, "models", "show", "m@prod")
    assert code == 3


def test_verify_detects_a_flipped_byte_and_gc_reclaims(
    capsys: pytest.CaptureFixture[str], tiny_onnx: Path, home: Path
) -> None:
    assert run(capsys, "models", "register", str(tiny_onnx), "--name", "m")[0] == 0
    code, out, _ = run(capsys, "models", "verify", "--json")
    assert code == 0
    shown = json.loads(run(capsys, "models", "show", "m", "--json")[1])
    sha = shown["manifest"]["files"]["model.onnx"]["sha256"]
    onnx_blob = home / "store" / "blobs" / "sha256" / sha[:2] / sha
    data = bytearray(onnx_blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_blob.chmod(0o644)
    onnx_blob.write_bytes(bytes(data))
    code, out, err = run(capsys, "models", "verify")
    assert code == 5
    assert "error[artifact-corrupted]" in err

    code, _, _ = run(capsys, "models", "rm", "m:1", "--force")
    assert code == 0
    code, out, _ = run(capsys, "models", "gc", "--json")
    assert code == 0
    assert len(json.loads(out)["removed"]) >= 1


def test_export_import_round_trip(
    capsys: pytest.CaptureFixture[str], tiny_onnx: Path, tmp_path: Path
) -> None:
    assert run(capsys, "models", "register", str(tiny_onnx), "--name", "m")[0] == 0
    archive = tmp_path / "m.tar.gz"
    assert run(capsys, "models", "export", "m", "--out", str(archive))[0] == 0
    code, out, err = run(capsys, "models", "import", str(archive), "--name", "m-copy", "--json")
    assert code == 0, err
    imported = json.loads(out)
    assert imported["name"] == "m-copy"
    original = json.loads(run(capsys, "models", "show", "m", "--json")[1])
    assert (
        imported["manifest"]["files"]["model.onnx"]["sha256"]
        == original["manifest"]["files"]["model.onnx"]["sha256"]
    )


def test_evaluate_and_predict_from_the_cli(
    capsys: pytest.CaptureFixture[str], iris_onnx: Path, iris_csv: Path, tmp_path: Path
) -> None:
    code, _, err = run(capsys, "models", "register", str(iris_onnx), "--name", "iris")
    assert code == 0, err
    code, out, err = run(
        capsys, "evaluate", "iris", "--data", str(iris_csv), "--target", "species", "--json"
    )
    assert code == 0, err
    metrics = json.loads(out)["metrics"]
    assert metrics["accuracy"] > 0.9
    shown = json.loads(run(capsys, "models", "show", "iris", "--json")[1])
    assert shown["metrics"], "evaluate must store its metrics on the version"

    preds = tmp_path / "preds.parquet"
    code, out, err = run(
        capsys, "predict", "iris", "--data", str(iris_csv), "--out", str(preds), "--json"
    )
    assert code == 0, err
    import pyarrow.parquet as pq

    table = pq.read_table(preds)
    assert table.num_rows == 150
    assert "label" in table.column_names


def test_evaluate_with_a_missing_target_column_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], iris_onnx: Path, iris_csv: Path
) -> None:
    assert run(capsys, "models", "register", str(iris_onnx), "--name", "iris")[0] == 0
    code, _, err = run(capsys, "evaluate", "iris", "--data", str(iris_csv), "--target", "nope")
    assert code == 5
    assert "error[invalid-data]" in err
    assert "species" in err  # names the columns that do exist


def test_quickstart_runs_the_whole_path(tmp_path: Path) -> None:
    env = {**os.environ, "SHIPYARD_HOME": str(tmp_path / "qs")}
    exe = Path(sys.executable).with_name("shipyard")
    proc = subprocess.run(
        [str(exe), "quickstart"], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "What to try next" in proc.stdout
    assert "iris@prod -> 1" in proc.stdout
    # the demo ends with a live server answering both protocols
    assert "POST /v2/models/iris@prod/infer\n    -> 200" in proc.stdout
    assert "POST /v1/models/diabetes:predict\n    -> 200" in proc.stdout
    # and monitoring: late labels joined, live quality read back
    assert '-> 200 {"accepted":20,"unknown":[]}' in proc.stdout
    assert "20 labelled of 61 logged: live accuracy" in proc.stdout
    # and drift: the evaluation data became iris's reference; traffic like it does not drift
    assert (
        "drift of the 61 logged rows against the evaluation data (60 rows): "
        "0 of 4 features drifted, prediction drifted: False" in proc.stdout
    )
    listed = subprocess.run(
        [str(exe), "--json", "models", "list"], capture_output=True, text=True, env=env, check=True
    )
    names = {m["name"] for m in json.loads(listed.stdout)}
    assert names == {"iris", "diabetes"}

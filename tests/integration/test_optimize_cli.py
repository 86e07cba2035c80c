"""`shipyard optimize` end to end: real registry, real ONNX Runtime, the report in chromium."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from shipyard.cli.main import main
from shipyard.config import Settings
from shipyard.registry import ModelRegistry
from tests.browser import load_page, require_chromium


@pytest.fixture
def digits_val(settings: Settings, tmp_path: Path) -> Path:
    """digits:1 (a scikit-learn MLP registered through the CLI) and a validation .npz."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=100, random_state=0)
        clf.fit(x[:1000], y[:1000])
    onnx_path = tmp_path / "digits.onnx"
    onnx_path.write_bytes(
        to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}).SerializeToString()
    )
    code = main(["models", "register", str(onnx_path), "--name", "digits", "--json"])
    assert code == 0
    data = tmp_path / "val.npz"
    with ModelRegistry.open(settings) as reg:
        name = reg.get("digits").manifest.signature.inputs[0].name
    np.savez(data, **{name: x[1000:], "y": y[1000:]})
    return data


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_optimize_json_registers_promotes_and_writes_a_report(
    capsys: pytest.CaptureFixture[str], digits_val: Path, tmp_path: Path, settings: Settings
) -> None:
    capsys.readouterr()
    report = tmp_path / "out" / "report.html"
    code, out, err = _run(
        capsys,
        "optimize",
        "digits",
        "--data",
        str(digits_val),
        "--techniques",
        "ort-graph,int8-dynamic,prune",
        "--objective",
        "size",
        "--max-drop",
        "0.02",
        "--promote",
        "small",
        "--report",
        str(report),
        "--json",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ref"] == "digits:1" and doc["metric"] == "accuracy"
    assert [v["name"] for v in doc["variants"]] == ["ort-graph", "int8-dynamic", "prune-0.5"]
    statuses = {v["name"]: v["status"] for v in doc["variants"]}
    assert statuses["ort-graph"] == "passed"
    assert doc["best"] is not None and doc["promoted"] == "small"
    assert doc["report_path"] == str(report) and report.exists()
    with ModelRegistry.open(settings) as reg:
        assert reg.get("digits").version == 1
        assert reg.get("digits@small").ref == doc["best_ref"]
    registered = [v for v in doc["variants"] if v["ref"]]
    assert all(v["status"] == "passed" for v in registered)


def test_optimize_prints_a_table_and_the_best(
    capsys: pytest.CaptureFixture[str], digits_val: Path
) -> None:
    capsys.readouterr()
    code, out, err = _run(
        capsys, "optimize", "digits", "--data", str(digits_val), "--techniques", "fp16"
    )
    assert code == 0, err
    assert "gate: accuracy drop <= 0.01" in out
    assert "best by throughput: fp16 (digits:2)" in out


def test_optimize_refuses_an_unknown_technique(
    capsys: pytest.CaptureFixture[str], digits_val: Path
) -> None:
    capsys.readouterr()
    code, _, err = _run(
        capsys, "optimize", "digits", "--data", str(digits_val), "--techniques", "int4"
    )
    assert code == 5
    assert "Techniques must be among" in err


def test_the_report_renders_offline_in_chromium(
    capsys: pytest.CaptureFixture[str], digits_val: Path, tmp_path: Path
) -> None:
    require_chromium()
    capsys.readouterr()
    report = tmp_path / "report.html"
    code, out, err = _run(
        capsys,
        "optimize",
        "digits",
        "--data",
        str(digits_val),
        "--techniques",
        "ort-graph,fp16,prune",
        "--no-register",
        "--report",
        str(report),
        "--json",
    )
    assert code == 0, err
    measured = [v for v in json.loads(out)["variants"] if v["figures"]]
    page = load_page(
        report,
        expressions={
            "points": "document.querySelectorAll('#plot-quality-latency circle.point').length",
            "visible": "[...document.querySelectorAll('circle.point')]"
            ".filter(c => c.getBoundingClientRect().width > 0).length",
            "xs": "[...document.querySelectorAll('circle.point')].map(c => +c.dataset.x)",
            "bars": "document.querySelectorAll('#plot-size rect.point').length",
            "rows": "document.querySelectorAll('#figures tr').length",
        },
    )
    assert page.requests == []
    assert page.console_errors == []
    assert page.values["points"] == len(measured) + 1
    assert page.values["visible"] == len(measured) + 1
    assert page.values["bars"] == len(measured) + 1
    assert page.values["rows"] == 1 + 1 + 3
    assert all(x > 0 for x in page.values["xs"])
    assert not page.screenshot_blank()
    assert page.screenshot_colors() > 3


def test_the_cli_offers_exactly_the_workflow_techniques() -> None:
    from shipyard.cli.optimize import _TECHNIQUES
    from shipyard.workflows.optimize import TECHNIQUES

    assert _TECHNIQUES == TECHNIQUES

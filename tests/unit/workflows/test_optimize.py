"""optimize on real tiny models: measuring, the quality gate, lineage, aliases, the report."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from shipyard.errors import InvalidInputError
from shipyard.registry import ModelRegistry
from shipyard.spec import DType, NewVersion, Signature, TaskSchema, TaskType, TensorSpec
from shipyard.workflows.optimize import Budget, optimize

FAST = Budget(iterations=5, seconds=0.05, warmup=1, loads=1)


def _digits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y, test_size=0.3, random_state=seed)  # type: ignore[no-any-return]


@pytest.fixture
def digits(registry: ModelRegistry, tmp_path: Path, seed: int) -> Path:
    """digits:1, a scikit-learn MLP (label + probabilities), and its validation set as .npz."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    x_tr, x_va, y_tr, y_va = _digits(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, random_state=seed).fit(
            x_tr, y_tr
        )
    path = tmp_path / "digits.onnx"
    path.write_bytes(
        to_onnx(clf, x_tr[:1], options={id(clf): {"zipmap": False}}).SerializeToString()
    )
    sig = Signature(
        inputs=(TensorSpec(name="X", dtype=DType.FP32, shape=(None, 64)),),
        outputs=(
            TensorSpec(name="label", dtype=DType.INT64, shape=(None,)),
            TensorSpec(name="probabilities", dtype=DType.FP32, shape=(None, 10)),
        ),
    )
    task = TaskSchema(
        task=TaskType.CLASSIFICATION,
        class_labels=tuple(range(10)),
        label_output="label",
        scores_output="probabilities",
    )
    registry.register(
        "digits", NewVersion(signature=sig, task=task, framework="sklearn"), {"model.onnx": path}
    )
    data = tmp_path / "val.npz"
    np.savez(data, X=x_va, y=y_va)
    return data


def test_passing_variants_are_registered_with_lineage_and_default_stays(
    registry: ModelRegistry, digits: Path, tmp_path: Path
) -> None:
    res = optimize(
        registry,
        "digits",
        digits,
        max_drop=0.05,
        techniques=["ort-graph", "fp16", "int8-static"],
        calibration_methods=["minmax"],
        budget=FAST,
        report_path=tmp_path / "report.html",
    )
    assert res.metric == "accuracy" and res.baseline.status == "baseline"
    assert [v.name for v in res.variants] == ["ort-graph", "fp16", "int8-static-minmax"]
    base_acc = res.baseline.figures["quality"]["accuracy"]
    assert base_acc > 0.8
    for v in res.variants:
        figures = v.figures
        assert figures["size_bytes"] > 0 and figures["load_ms"] > 0
        assert figures["batch1"]["p50_ms"] <= figures["batch1"]["p99_ms"]
        assert figures["batch32"]["batch"] == 32 and figures["batch32"]["throughput_rps"] > 0
        assert v.delta == pytest.approx(figures["quality"]["accuracy"] - base_acc)
        assert v.status == "passed", v.reason
        mv = registry.get(v.ref or "missing:1")
        assert mv.manifest.lineage.parent_version == 1
        assert mv.manifest.lineage.transformation == v.technique
        assert mv.manifest.lineage.parameters["variant"] == v.name
        assert mv.manifest.parity is not None
        assert mv.manifest.parity.atol >= figures["parity"]["max_abs_error"]
        assert mv.metrics["optimize"]["size_bytes"] == figures["size_bytes"]
        assert "optimize-report" in mv.manifest.files
        assert "default" not in mv.aliases
    graph = res.variants[0]
    assert graph.figures["parity"]["max_abs_error"] < 1e-5
    assert graph.figures["parity"]["label_agreement"] == 1.0
    assert registry.get("digits").version == 1
    assert len(registry.list_versions("digits")) == 4
    assert res.best in {v.name for v in res.variants}
    assert res.best_ref is not None and res.speedup is not None and res.speedup > 0
    html = (tmp_path / "report.html").read_text()
    assert html.count('<circle class="point"') == 4  # one per measured variant
    assert html.count('<rect class="point"') == 4  # and its size bar
    stored = registry.read_artifact(res.best_ref, role="optimize-report").decode()
    assert stored == html


def test_gate_rejects_a_variant_that_really_drops(registry: ModelRegistry, digits: Path) -> None:
    res = optimize(
        registry, "digits", digits, max_drop=0.0, techniques=["prune"], sparsity=0.95, budget=FAST
    )
    (pruned,) = res.variants
    assert pruned.status == "rejected"
    assert pruned.drop is not None and pruned.drop > 0
    assert pruned.delta == pytest.approx(-pruned.drop)
    assert "max_drop" in (pruned.reason or "")
    assert pruned.ref is None and res.best is None and res.best_ref is None
    assert [mv.version for mv in registry.list_versions("digits")] == [1]


def test_promote_points_the_alias_at_the_best_by_objective(
    registry: ModelRegistry, digits: Path
) -> None:
    res = optimize(
        registry,
        "digits",
        digits,
        max_drop=1.0,
        objective="size",
        techniques=["ort-graph", "int8-dynamic"],
        budget=FAST,
        promote="small",
    )
    sizes = {v.name: v.figures["size_bytes"] for v in res.variants}
    assert res.best == min(sizes, key=lambda k: sizes[k]) == "int8-dynamic"
    assert res.promoted == "small"
    assert registry.get("digits@small").ref == res.best_ref
    assert registry.get("digits").version == 1
    assert res.speedup == pytest.approx(res.baseline.figures["size_bytes"] / sizes["int8-dynamic"])


def test_measure_only_registers_nothing(registry: ModelRegistry, digits: Path) -> None:
    res = optimize(
        registry, "digits", digits, techniques=["fp16"], budget=FAST, register=False, promote="x"
    )
    assert res.variants[0].status == "passed" and res.variants[0].ref is None
    assert res.promoted is None
    assert len(registry.list_versions("digits")) == 1


def test_structured_pruning_is_skipped_where_the_graph_has_no_chain(
    registry: ModelRegistry, tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    from tests.unit.workflows.conftest import register_classifier

    x, y = iris
    register_classifier(registry, tmp_path, "iris", x, y, feature_names=None)
    data = tmp_path / "iris.npz"
    np.savez(data, X=x.astype(np.float32), y=y)
    res = optimize(registry, "iris", data, techniques=["prune-channels"], budget=FAST)
    assert {v.status for v in res.variants} == {"skipped"}
    assert res.best is None


def test_regressors_are_gated_on_mae(registry: ModelRegistry, tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes
    from sklearn.neural_network import MLPRegressor

    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=50, random_state=0).fit(x, y)
    path = tmp_path / "reg.onnx"
    path.write_bytes(to_onnx(reg, x[:1]).SerializeToString())
    sig = Signature(
        inputs=(TensorSpec(name="X", dtype=DType.FP32, shape=(None, 10)),),
        outputs=(TensorSpec(name="variable", dtype=DType.FP32, shape=(None, 1)),),
    )
    task = TaskSchema(task=TaskType.REGRESSION, scores_output="variable")
    registry.register(
        "reg", NewVersion(signature=sig, task=task, framework="sklearn"), {"model.onnx": path}
    )
    data = tmp_path / "reg.npz"
    np.savez(data, X=x, y=y)
    res = optimize(registry, "reg", data, techniques=["fp16"], max_drop=1.0, budget=FAST)
    assert res.metric == "mae"
    (fp16,) = res.variants
    assert "rmse" in fp16.figures["quality"]
    assert fp16.drop == pytest.approx(
        fp16.figures["quality"]["mae"] - res.baseline.figures["quality"]["mae"]
    )
    assert fp16.figures["parity"]["label_agreement"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"techniques": ["int4"]}, "Techniques"),
        ({"techniques": []}, "Techniques"),
        ({"objective": "speed"}, "Objective"),
        ({"max_drop": -0.1}, "max_drop"),
        ({"calibration_methods": ["kl"]}, "Calibration"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(
    registry: ModelRegistry, digits: Path, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        optimize(registry, "digits", digits, budget=FAST, **kwargs)  # type: ignore[arg-type]


def test_a_table_without_target_is_refused(
    registry: ModelRegistry, digits: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "val.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInputError, match="label column"):
        optimize(registry, "digits", csv, budget=FAST)

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from shipyard.errors import FeatureMismatch, InvalidData, ShipyardError
from shipyard.monitoring.drift import (
    PSI_EPSILON,
    DriftThresholds,
    Reference,
    drift,
    drift_windows,
)


def ks(ref: np.ndarray, cur: np.ndarray):
    report = drift(Reference.build({"x": ref}), {"x": cur})
    return report.features[0]


def scipy_ks(ref: np.ndarray, cur: np.ndarray, **kwargs: object):
    with warnings.catch_warnings():  # scipy warns when its exact method falls back
        warnings.simplefilter("ignore", RuntimeWarning)
        return scipy.stats.ks_2samp(ref, cur, **kwargs)


def psi_reference(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> float:
    """PSI the slow, obvious way: np.quantile edges, np.digitize, clipped proportions."""
    edges = np.unique(np.quantile(ref, np.arange(1, bins) / bins))
    pr = np.bincount(np.digitize(ref, edges, right=True), minlength=len(edges) + 1) / len(ref)
    pc = np.bincount(np.digitize(cur, edges, right=True), minlength=len(edges) + 1) / len(cur)
    pr, pc = np.maximum(pr, PSI_EPSILON), np.maximum(pc, PSI_EPSILON)
    return float(np.sum((pc - pr) * np.log(pc / pr)))


@pytest.mark.parametrize(
    ("n1", "n2", "shift", "decimals"),
    [
        (1, 1, 0.0, 1),  # tiny
        (3, 5, 0.5, 0),  # tiny, ties
        (40, 40, 0.3, 1),  # equal sizes: exact, square method
        (57, 113, 0.2, 1),  # exact, unequal sizes
        (2000, 3000, 0.05, 2),  # exact, ties
        (10_000, 10_000, 0.0, 3),  # exact at the boundary
        (12_000, 15_000, 0.0, 2),  # asymptotic
        (300, 20_000, 0.1, 3),  # asymptotic, small en
        (60_000, 80_000, 0.02, 6),  # asymptotic, en > 5000, both regions
        (60_000, 80_000, 0.0, 6),
    ],
)
def test_ks_matches_scipy(n1: int, n2: int, shift: float, decimals: int) -> None:
    rng = np.random.default_rng(n1 + n2)
    ref = np.round(rng.normal(size=n1), decimals)
    cur = np.round(rng.normal(shift, 1.0, size=n2), decimals)
    got = ks(ref, cur)
    want = scipy_ks(ref, cur)
    assert got.statistic == pytest.approx(want.statistic, abs=1e-12)
    assert got.p_value == pytest.approx(want.pvalue, abs=1e-6)


def test_exact_ks_p_values_only_within_the_pair_budget() -> None:
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(size=3000), rng.normal(0.05, 1.0, size=4000)
    exact = drift(Reference.build({"x": ref}), {"x": cur}).features[0]
    capped = drift(
        Reference.build({"x": ref}), {"x": cur}, exact_max_pairs=3000 * 4000 - 1
    ).features[0]
    assert exact.p_value == pytest.approx(scipy_ks(ref, cur).pvalue, abs=1e-6)
    assert capped.p_value == pytest.approx(scipy_ks(ref, cur, method="asymp").pvalue, abs=1e-6)
    assert capped.statistic == exact.statistic and capped.p_value != exact.p_value


def test_ks_identical_and_constant_columns() -> None:
    x = np.arange(100.0)
    same = ks(x, x.copy())
    assert same.statistic == 0.0 and same.p_value == 1.0 and same.drifted is False
    const = ks(np.full(50, 3.0), np.full(70, 3.0))
    assert const.statistic == 0.0 and const.p_value == 1.0
    apart = ks(np.full(50, 3.0), np.full(70, 4.0))
    want = scipy_ks(np.full(50, 3.0), np.full(70, 4.0))
    assert apart.statistic == 1.0 and apart.p_value == pytest.approx(want.pvalue, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    ref=arrays(np.float64, st.integers(1, 60), elements=st.integers(-5, 5).map(float)),
    cur=arrays(np.float64, st.integers(1, 60), elements=st.integers(-5, 5).map(float)),
)
def test_ks_matches_scipy_generated(ref: np.ndarray, cur: np.ndarray) -> None:
    got = ks(ref, cur)
    want = scipy_ks(ref, cur)
    assert got.statistic == pytest.approx(want.statistic, abs=1e-12)
    assert got.p_value == pytest.approx(want.pvalue, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    ref=arrays(
        np.float64,
        st.integers(1, 200),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    ),
    cur=arrays(
        np.float64,
        st.integers(1, 200),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    ),
)
def test_psi_matches_reference_implementation(ref: np.ndarray, cur: np.ndarray) -> None:
    result = drift(Reference.build({"x": ref}), {"x": cur}).features[1]
    assert result.test == "psi"
    assert result.statistic == pytest.approx(psi_reference(ref, cur), rel=1e-9, abs=1e-12)


def test_psi_large_shift_drifts_and_small_does_not() -> None:
    rng = np.random.default_rng(0)
    ref = Reference.build({"x": rng.normal(size=5000)})
    same = drift(ref, {"x": rng.normal(size=5000)}).features[1]
    moved = drift(ref, {"x": rng.normal(1.0, 1.0, size=5000)}).features[1]
    assert same.statistic is not None and same.statistic < 0.05 and same.drifted is False
    assert moved.statistic is not None and moved.statistic > 0.2 and moved.drifted is True


def chi2_scipy(ref: list[str], cur: list[str]) -> tuple[float, float]:
    cats = sorted(set(ref) | set(cur))
    table = np.array([[ref.count(c) for c in cats], [cur.count(c) for c in cats]])
    if len(cats) == 1:
        return 0.0, 1.0
    res = scipy.stats.chi2_contingency(table)
    return float(res.statistic), float(res.pvalue)


@pytest.mark.parametrize(
    ("ref", "cur"),
    [
        (["a"] * 30 + ["b"] * 20, ["a"] * 10 + ["b"] * 40),  # 2x2: Yates
        (["a"] * 30 + ["b"] * 20 + ["c"] * 5, ["a"] * 10 + ["b"] * 40 + ["c"] * 2),
        (["a"] * 30 + ["b"] * 20, ["a"] * 10 + ["b"] * 40 + ["z"] * 7),  # unseen category
        (["a"] * 30, ["a"] * 10),  # one category: dof 0
        (["a", "b"], ["b", "b", "c"]),
    ],
)
def test_chi2_matches_scipy(ref: list[str], cur: list[str]) -> None:
    got = drift(Reference.build({"c": np.array(ref)}), {"c": np.array(cur)}).features[0]
    stat, p = chi2_scipy(ref, cur)
    assert got.kind == "categorical" and got.test == "chi2"
    assert got.statistic == pytest.approx(stat, abs=1e-9)
    assert got.p_value == pytest.approx(p, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    ref=st.lists(st.sampled_from("abcd"), min_size=1, max_size=80),
    cur=st.lists(st.sampled_from("abcde"), min_size=1, max_size=80),
)
def test_chi2_matches_scipy_generated(ref: list[str], cur: list[str]) -> None:
    got = drift(Reference.build({"c": np.array(ref)}), {"c": np.array(cur)}).features[0]
    stat, p = chi2_scipy(ref, cur)
    assert got.statistic == pytest.approx(stat, rel=1e-9, abs=1e-9)
    assert got.p_value == pytest.approx(p, abs=1e-6)


def test_integer_feature_declared_categorical() -> None:
    ref = Reference.build({"k": np.array([1, 2, 2, 3] * 10)}, categorical=["k"])
    got = drift(ref, {"k": np.array([1, 1, 1, 3] * 10)}).features[0]
    assert got.test == "chi2"
    table = np.array([[10, 20, 10], [30, 0, 10]])
    assert got.p_value == pytest.approx(scipy.stats.chi2_contingency(table).pvalue, abs=1e-6)


def test_nan_policy_drops_missing_values_and_counts_them() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(size=300)
    cur = rng.normal(0.3, 1.0, size=200)
    ref_nan, cur_nan = ref.copy(), cur.copy()
    ref_nan[::10] = np.nan
    cur_nan[::7] = np.nan
    got = ks(ref_nan, cur_nan)
    want = scipy_ks(ref_nan, cur_nan, nan_policy="omit")
    assert got.p_value == pytest.approx(want.pvalue, abs=1e-6)
    assert got.n_missing == int(np.isnan(cur_nan).sum())
    assert got.n_reference == 300 - 30 and got.n_current == 200 - got.n_missing
    cats = drift(
        Reference.build({"c": np.array(["a", None, "b", "a"], dtype=object)}),
        {"c": np.array(["a", float("nan"), None, "b"], dtype=object)},
    ).features[0]
    assert cats.n_missing == 2 and cats.n_current == 2 and cats.n_reference == 3


def test_all_missing_gives_no_verdict_and_json_has_no_nan() -> None:
    report = drift(Reference.build({"x": np.arange(10.0)}), {"x": np.full(5, np.nan)})
    assert [r.drifted for r in report.features] == [None, None]
    assert report.verdicts() == {"x": None}
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert json.loads(text)["features"][0]["statistic"] is None


def test_thresholds_and_verdict_rules() -> None:
    rng = np.random.default_rng(1)
    ref = Reference.build({"x": rng.normal(size=2000), "y": rng.normal(size=2000)})
    cur = {"x": rng.normal(0.15, 1.0, size=2000), "y": rng.normal(size=2000)}
    report = drift(ref, cur)
    ks_x, psi_x = report.features[0], report.features[1]
    assert ks_x.drifted is True and psi_x.drifted is False
    assert report.drifted_features == ["x"] and report.share_drifted == 0.5
    assert drift(ref, cur, thresholds=DriftThresholds(numeric_verdict="psi")).drifted_features == []
    assert drift(ref, cur, thresholds=DriftThresholds(numeric_verdict="all")).drifted_features == []
    loose = drift(ref, cur, thresholds=DriftThresholds(ks_p_value=1e-12, psi=1e-6))
    assert loose.features[0].drifted is False and loose.features[1].drifted is True
    with pytest.raises(ValueError, match="extra"):
        DriftThresholds(psi_limit=0.1)  # type: ignore[call-arg]


def test_matrix_input_matches_mapping_input_and_threads_agree() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(500, 20))
    cur = rng.normal(0.1, 1.0, size=(700, 20))
    names = [f"f{i}" for i in range(20)]
    r_arr = Reference.build(ref, feature_names=names)
    r_map = Reference.build({n: ref[:, i] for i, n in enumerate(names)})
    a = drift(r_arr, cur, feature_names=names, workers=2).to_dict()
    b = drift(r_map, {n: cur[:, i] for i, n in enumerate(names)}, workers=1).to_dict()
    assert a == b
    for i in (0, 7, 19):
        want = scipy_ks(ref[:, i], cur[:, i]).pvalue
        assert a["features"][2 * i]["p_value"] == pytest.approx(want, abs=1e-6)


def test_prediction_drift_numeric_labels_and_probabilities() -> None:
    rng = np.random.default_rng(4)
    x_ref, x_cur = rng.normal(size=400), rng.normal(size=400)
    proba_ref = rng.uniform(size=400)
    proba_cur = rng.uniform(size=400) ** 2
    ref = Reference.build({"x": x_ref}, predictions=proba_ref)
    report = drift(ref, {"x": x_cur}, predictions=proba_cur)
    assert [r.test for r in report.prediction] == ["ks", "psi"]
    want = scipy_ks(proba_ref, proba_cur).pvalue
    assert report.prediction[0].p_value == pytest.approx(want, abs=1e-6)
    assert report.prediction_drifted is True
    labels = Reference.build({"x": x_ref}, predictions=(proba_ref > 0.5).astype(int))
    rep = drift(labels, {"x": x_cur}, predictions=(proba_cur > 0.5).astype(int))
    assert rep.prediction[0].test == "chi2" and rep.prediction[0].feature == "prediction"
    matrix = Reference.build({"x": x_ref}, predictions=np.stack([1 - proba_ref, proba_ref], 1))
    rep = drift(matrix, {"x": x_cur}, predictions=np.stack([1 - proba_cur, proba_cur], 1))
    assert {r.feature for r in rep.prediction} == {"prediction[0]", "prediction[1]"}
    assert drift(ref, {"x": x_cur}).prediction == ()


def test_windows_split_rows() -> None:
    rng = np.random.default_rng(5)
    ref = Reference.build({"x": rng.normal(size=1000)})
    cur = np.concatenate([rng.normal(size=500), rng.normal(2.0, 1.0, size=500)])
    psi_only = DriftThresholds(numeric_verdict="psi")
    reports = drift_windows(ref, {"x": cur}, window=400, thresholds=psi_only)
    assert [r.n_current for r in reports] == [400, 400, 200]
    assert [r.drifted_features for r in reports] == [[], ["x"], ["x"]]
    with pytest.raises(InvalidData, match="window"):
        drift_windows(ref, {"x": cur}, window=0)


def test_input_errors_are_shipyard_errors() -> None:
    ref = Reference.build({"a": np.arange(10.0), "b": np.arange(10.0)})
    with pytest.raises(FeatureMismatch, match=r"Missing: \['b'\]") as info:
        drift(ref, {"a": np.arange(5.0), "c": np.arange(5.0)})
    assert info.value.code == "feature-mismatch" and info.value.hint
    with pytest.raises(InvalidData, match="same length"):
        drift(ref, {"a": np.arange(5.0), "b": np.arange(4.0)})
    with pytest.raises(InvalidData, match="2-D"):
        drift(ref, np.arange(5.0))
    with pytest.raises(InvalidData, match="name each of the 3"):
        Reference.build(np.zeros((4, 3)), feature_names=["a", "b"])
    with pytest.raises(InvalidData, match="at least one row"):
        Reference.build({"a": np.array([])})
    with pytest.raises(InvalidData, match="must hold numbers"):
        drift(ref, {"a": np.array(["x"] * 5, dtype=object), "b": np.arange(5.0)})
    with pytest.raises(InvalidData, match="bins"):
        Reference.build({"a": np.arange(3.0)}, bins=1)
    with pytest.raises(FeatureMismatch, match="categorical"):
        Reference.build({"a": np.arange(3.0)}, categorical=["nope"])
    with_pred = Reference.build({"a": np.arange(10.0)}, predictions=np.arange(10.0))
    with pytest.raises(FeatureMismatch, match="predictions"):
        drift(with_pred, {"a": np.arange(5.0)}, predictions=np.zeros((5, 2)))
    with pytest.raises(InvalidData, match="predictions"):
        drift(with_pred, {"a": np.arange(5.0)}, predictions=np.zeros(4))
    with pytest.raises(ShipyardError):
        drift(ref, {"a": np.zeros((5, 2)), "b": np.arange(5.0)})


def test_extra_columns_are_reported_not_tested() -> None:
    ref = Reference.build({"a": np.arange(10.0)})
    report = drift(ref, {"a": np.arange(10.0), "zz": np.arange(10.0)})
    assert report.unused_columns == ("zz",)
    assert {r.feature for r in report.features} == {"a"}


def test_reference_round_trips_through_a_file(tmp_path) -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=300)
    x[::9] = np.nan
    ref = Reference.build(
        {"x": x, "c": np.array(["a", "b", "c"] * 100)},
        predictions=rng.uniform(size=300),
        bins=7,
    )
    ref.save(tmp_path / "ref.npz")
    back = Reference.load(tmp_path / "ref.npz")
    cur = {"x": rng.normal(0.2, 1.0, size=250), "c": np.array(["a", "b", "d", "a", "b"] * 50)}
    preds = rng.uniform(size=250)
    assert (
        drift(back, cur, predictions=preds).to_dict()
        == drift(ref, cur, predictions=preds).to_dict()
    )
    assert back.features == ("x", "c") and back.bins == 7
    (tmp_path / "bad.npz").write_bytes(b"not an archive")
    with pytest.raises(InvalidData, match=r"Reference\.to_bytes"):
        Reference.load(tmp_path / "bad.npz")
    with pytest.raises(ShipyardError, match="must exist"):
        Reference.load(tmp_path / "missing.npz")

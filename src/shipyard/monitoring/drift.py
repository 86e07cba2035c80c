"""Data drift: a current window of features (and predictions) against a reference dataset.

Numeric features get the two-sample Kolmogorov-Smirnov test and the population stability
index (PSI); categorical features get Pearson's chi² test on the 2 x k table of category
counts. Predictions are one more column (``prediction``, or ``prediction[k]`` per class
for a 2-D probability matrix), reported apart from the features.

Statistics match scipy: the KS statistic and p-value equal ``scipy.stats.ks_2samp``
(``method="auto"``: exact when both samples hold at most 10,000 values, else Smirnov's
asymptotic ``kstwo`` distribution), chi² equals ``scipy.stats.chi2_contingency`` (with
its Yates correction when the table has one degree of freedom).

How it is fast: the reference side is prepared once in `Reference` (sorted values, their
distinct values with ECDF counts, PSI bin edges and proportions). For a window, each
current column is sorted once (columns in chunks, two threads; numpy's sort and
searchsorted release the GIL) and only the reference's distinct values are looked up in
it: the ECDF difference's extremes lie at those points or just before them, so the pooled
sample is never built.

PSI binning: ``bins`` (default 10) quantile bins of the reference, edges at the
reference's 1/bins, 2/bins … quantiles (numpy's linear interpolation, duplicates merged),
bins closed on the right, the outer bins open to ±inf. A proportion below ``PSI_EPSILON``
(1e-4) is raised to it before ``sum((cur - ref) * ln(cur / ref))``, so an empty bin costs
a bounded amount rather than infinity.

NaN policy: missing values (NaN; for categorical features also None) are left out of every
test on both sides, and counted in ``n_missing``. A feature with no value left on either
side gets ``statistic=None`` and ``drifted=None``. ±inf are ordinary values for KS, as in
scipy, and fall into the outer PSI bins.

Imports: numpy, pydantic, scipy (lazily), shipyard.errors (L0-L2 only).
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from shipyard._utils.fs import atomic_write_bytes
from shipyard.errors import DataNotFound, FeatureMismatch, InvalidData, MissingDependency
from shipyard.monitoring._kolmogorov import kstwo_sf

__all__ = [
    "PSI_EPSILON",
    "DriftReport",
    "DriftResult",
    "DriftThresholds",
    "Reference",
    "drift",
    "drift_windows",
]

PSI_EPSILON = 1e-4
"""Floor for a bin proportion in PSI (see the module docstring)."""

EXACT_KS_MAX_N = 10_000
"""As scipy's ``ks_2samp(method="auto")``: exact p-values when both n <= this."""

_CHUNK_COLUMNS = 8
_TEXT_KINDS = frozenset("USOb")

Kind = Literal["numeric", "categorical"]
ColumnData = Mapping[str, Any] | npt.NDArray[Any] | Any


class DriftThresholds(BaseModel):
    """When a statistic counts as drift."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ks_p_value: float = Field(0.05, gt=0.0, lt=1.0)
    """KS test: drift when the p-value is below this."""
    psi: float = Field(0.2, gt=0.0)
    """PSI: drift when the index is above this (0.1-0.2 is commonly read as moderate)."""
    chi2_p_value: float = Field(0.05, gt=0.0, lt=1.0)
    """Chi² test: drift when the p-value is below this."""
    numeric_verdict: Literal["any", "all", "ks", "psi"] = "any"
    """Which numeric tests decide a numeric feature's verdict: either, both, or one."""


@dataclass(frozen=True)
class DriftResult:
    """One test of one feature.

    ``statistic`` is the KS D, the PSI or the chi² statistic; ``p_value`` is None for PSI;
    both are None (and ``drifted`` is None) when a side had no non-missing value.
    """

    feature: str
    kind: Kind
    test: Literal["ks", "psi", "chi2"]
    statistic: float | None
    p_value: float | None
    threshold: float
    drifted: bool | None
    n_reference: int
    n_current: int
    n_missing: int


@dataclass(frozen=True)
class DriftReport:
    """Every test of every feature for one window, plus the prediction's drift."""

    features: tuple[DriftResult, ...]
    prediction: tuple[DriftResult, ...]
    thresholds: DriftThresholds
    n_reference: int
    n_current: int
    unused_columns: tuple[str, ...] = field(default=())

    def verdicts(self, results: Iterable[DriftResult] | None = None) -> dict[str, bool | None]:
        """Feature → drifted, combining its tests by ``thresholds.numeric_verdict``."""
        by_feature: dict[str, list[DriftResult]] = {}
        for r in self.features if results is None else results:
            by_feature.setdefault(r.feature, []).append(r)
        rule = self.thresholds.numeric_verdict
        out: dict[str, bool | None] = {}
        for name, tests in by_feature.items():
            if tests[0].kind == "numeric" and rule in ("ks", "psi"):
                tests = [t for t in tests if t.test == rule]
            flags = [t.drifted for t in tests if t.drifted is not None]
            if not flags:
                out[name] = None
            elif rule == "all" and tests[0].kind == "numeric":
                out[name] = all(flags)
            else:
                out[name] = any(flags)
        return out

    @property
    def drifted_features(self) -> list[str]:
        """Names of the features whose verdict is drift, in reference order."""
        return [name for name, v in self.verdicts().items() if v]

    @property
    def share_drifted(self) -> float:
        """Drifted features / features with a verdict (0.0 when none has one)."""
        judged = [v for v in self.verdicts().values() if v is not None]
        return sum(judged) / len(judged) if judged else 0.0

    @property
    def prediction_drifted(self) -> bool | None:
        """Whether any prediction column drifted; None without prediction data."""
        flags = [v for v in self.verdicts(self.prediction).values() if v is not None]
        return any(flags) if flags else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (NaN never appears: missing values are None)."""
        return {
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "thresholds": self.thresholds.model_dump(),
            "drifted_features": self.drifted_features,
            "share_drifted": self.share_drifted,
            "prediction_drifted": self.prediction_drifted,
            "features": [asdict(r) for r in self.features],
            "prediction": [asdict(r) for r in self.prediction],
            "unused_columns": list(self.unused_columns),
        }


# --------------------------------------------------------------------------- reference


@dataclass(frozen=True)
class _NumericRef:
    values: npt.NDArray[np.float64]  # sorted, no NaN
    distinct: npt.NDArray[np.float64]  # sorted distinct values
    ecdf: npt.NDArray[np.float64]  # reference ECDF at `distinct` (right-continuous)
    ecdf_before: npt.NDArray[np.float64]  # ECDF at the previous distinct value (0 first)
    edges: npt.NDArray[np.float64]  # interior PSI edges
    proportions: npt.NDArray[np.float64]  # reference share per PSI bin
    n_missing: int


@dataclass(frozen=True)
class _CategoricalRef:
    categories: tuple[str, ...]
    counts: npt.NDArray[np.int64]
    n_missing: int


_Ref = _NumericRef | _CategoricalRef


def _numeric_ref(column: npt.NDArray[np.float64], bins: int) -> _NumericRef:
    values = np.sort(column)
    n = int(np.searchsorted(values, np.inf, side="right"))  # NaN sorts last
    n_missing = len(values) - n
    values = values[:n]
    distinct = np.unique(values)
    counts_right = np.searchsorted(values, distinct, side="right")
    ecdf = counts_right / n if n else counts_right.astype(np.float64)
    ecdf_before = np.concatenate([[0.0], ecdf[:-1]])
    if n:
        edges = np.unique(np.quantile(values, np.arange(1, bins) / bins))
        proportions = _bin_counts(values, edges) / n
    else:
        edges = np.empty(0)
        proportions = np.ones(1)
    return _NumericRef(values, distinct, ecdf, ecdf_before, edges, proportions, n_missing)


def _bin_counts(sorted_values: npt.NDArray[np.float64], edges: npt.NDArray[np.float64]) -> Any:
    """Counts per PSI bin (right-closed) of already sorted, NaN-free values."""
    cum = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(np.concatenate([[0], cum, [len(sorted_values)]]))


def _missing_mask(column: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    if column.dtype.kind == "f":
        nan: npt.NDArray[np.bool_] = np.isnan(column)
        return nan
    if column.dtype.kind == "O":
        return np.fromiter(
            (v is None or (isinstance(v, float) and math.isnan(v)) for v in column),
            dtype=bool,
            count=len(column),
        )
    return np.zeros(len(column), dtype=bool)


def _category_counts(column: npt.NDArray[Any]) -> tuple[Any, Any, int]:
    missing = _missing_mask(column)
    kept = column[~missing].astype(str)
    cats, counts = np.unique(kept, return_counts=True)
    return cats, counts.astype(np.int64), int(missing.sum())


class Reference:
    """The reference side of drift, prepared once: build it from the evaluation data.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> ref = Reference.build({"x": rng.normal(size=500), "c": ["a", "b"] * 250})
        >>> ref.features, ref.kinds["c"]
        (('x', 'c'), 'categorical')
    """

    def __init__(
        self,
        columns: Mapping[str, _Ref],
        n_rows: int,
        n_features: int,
        bins: int,
    ) -> None:
        self._columns = dict(columns)
        self.n_rows = n_rows
        self.bins = bins
        names = list(self._columns)
        self.features: tuple[str, ...] = tuple(names[:n_features])
        self.prediction_columns: tuple[str, ...] = tuple(names[n_features:])
        self.kinds: dict[str, Kind] = {
            k: "numeric" if isinstance(v, _NumericRef) else "categorical"
            for k, v in self._columns.items()
        }

    @classmethod
    def build(
        cls,
        data: ColumnData,
        *,
        feature_names: Sequence[str] | None = None,
        categorical: Iterable[str] = (),
        predictions: Any = None,
        bins: int = 10,
    ) -> Reference:
        """Prepare a reference from columns.

        Args:
            data: A mapping of name → 1-D column, a pandas DataFrame, or a 2-D array
                (with ``feature_names``; default ``x0``, ``x1`` …).
            feature_names: Column names for a 2-D array.
            categorical: Features to treat as categorical even if numeric; text, bool and
                object columns are always categorical.
            predictions: The model's outputs on the reference rows: 1-D labels or scores,
                or a 2-D (N, K) probability matrix (one numeric column per class).
            bins: Number of PSI quantile bins (at least 2).

        Raises:
            InvalidData: wrong shapes, lengths that differ, no rows, or ``bins`` < 2.
        """
        if not isinstance(bins, int) or bins < 2:
            raise InvalidData(f"bins must be an integer >= 2. Got {bins!r} instead.")
        names, get, n_rows = _columns(data, feature_names, "reference")
        if n_rows == 0:
            raise InvalidData("The reference must hold at least one row. Got 0 instead.")
        cat = set(categorical)
        unknown = cat - set(names)
        if unknown:
            raise FeatureMismatch(
                f"categorical must name reference columns. Got unknown {sorted(unknown)}.",
                hint=f"The reference columns are {names}.",
            )
        pred_cols = _prediction_columns(predictions, n_rows, "reference")
        columns: dict[str, _Ref] = {}
        for name in names:
            col = get(name)
            columns[name] = _prepare_ref(col, name in cat or col.dtype.kind in _TEXT_KINDS, bins)
        for name, col in pred_cols.items():
            columns[name] = _prepare_ref(col, col.dtype.kind in _TEXT_KINDS | {"i", "u"}, bins)
        return cls(columns, n_rows, len(names), bins)

    def to_bytes(self) -> bytes:
        """Serialise (an ``.npz`` archive without pickles), for storing beside a version."""
        meta: dict[str, Any] = {
            "format": 1,
            "n_rows": self.n_rows,
            "n_features": len(self.features),
            "bins": self.bins,
            "columns": [],
        }
        arrays: dict[str, Any] = {}
        for i, (name, ref) in enumerate(self._columns.items()):
            entry: dict[str, Any] = {"name": name, "n_missing": ref.n_missing}
            if isinstance(ref, _NumericRef):
                entry["kind"] = "numeric"
                arrays[f"c{i}"] = ref.values
            else:
                entry["kind"] = "categorical"
                entry["categories"] = list(ref.categories)
                arrays[f"c{i}"] = ref.counts
            meta["columns"].append(entry)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Reference:
        """The inverse of `to_bytes`.

        Raises:
            InvalidData: the bytes are not a serialised reference.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                meta = json.loads(archive["meta"].tobytes().decode())
                columns: dict[str, _Ref] = {}
                for i, entry in enumerate(meta["columns"]):
                    arr = archive[f"c{i}"]
                    if entry["kind"] == "numeric":
                        ref = _numeric_ref(arr.astype(np.float64), int(meta["bins"]))
                        columns[entry["name"]] = replace(ref, n_missing=int(entry["n_missing"]))
                    else:
                        columns[entry["name"]] = _CategoricalRef(
                            tuple(entry["categories"]),
                            arr.astype(np.int64),
                            int(entry["n_missing"]),
                        )
            return cls(columns, int(meta["n_rows"]), int(meta["n_features"]), int(meta["bins"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidData(
                f"A drift reference must be an archive written by Reference.to_bytes. "
                f"Got unreadable data ({exc})."
            ) from exc

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write `to_bytes` to ``path`` atomically."""
        atomic_write_bytes(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Reference:
        """Read a reference written by `save`.

        Raises:
            DataNotFound: no file at ``path``.
            InvalidData: the file is not a serialised reference.
        """
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError as exc:
            raise DataNotFound(
                f"A drift reference file must exist at {path}. Got no such file."
            ) from exc
        return cls.from_bytes(data)


def _prepare_ref(column: npt.NDArray[Any], categorical: bool, bins: int) -> _Ref:
    if categorical:
        cats, counts, n_missing = _category_counts(column)
        return _CategoricalRef(tuple(cats.tolist()), counts, n_missing)
    return _numeric_ref(_as_float(column), bins)


def _as_float(column: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    try:
        return np.asarray(column, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidData(
            f"A numeric feature must hold numbers. Got values of type {column.dtype}.",
            hint="Pass it in `categorical=` when building the reference.",
        ) from exc


def _columns(
    data: ColumnData, feature_names: Sequence[str] | None, what: str
) -> tuple[list[str], Any, int]:
    """Names, a column getter and the row count of any accepted input."""
    if isinstance(data, Mapping) or hasattr(data, "columns"):
        names = [str(c) for c in (data.columns if hasattr(data, "columns") else data.keys())]
        keys = list(data.columns if hasattr(data, "columns") else data.keys())
        if feature_names is not None:
            raise InvalidData("feature_names is only for a 2-D array; columns have names.")
        cols = {n: np.asarray(data[k]) for n, k in zip(names, keys, strict=True)}
        lengths = {n: (c.shape[0] if c.ndim == 1 else -1) for n, c in cols.items()}
        bad = [n for n, v in lengths.items() if v < 0]
        if bad:
            raise InvalidData(f"Every {what} column must be 1-D. Got other shapes for {bad}.")
        if len(set(lengths.values())) > 1:
            raise InvalidData(f"Every {what} column must have the same length. Got {lengths}.")
        n_rows = next(iter(lengths.values()), 0)
        return names, cols.__getitem__, n_rows
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise InvalidData(
            f"The {what} data must be a mapping of columns or a 2-D array. "
            f"Got an array of shape {arr.shape} instead."
        )
    if feature_names is None:
        names = [f"x{i}" for i in range(arr.shape[1])]
    else:
        names = [str(n) for n in feature_names]
        if len(names) != arr.shape[1]:
            raise InvalidData(
                f"feature_names must name each of the {arr.shape[1]} columns. "
                f"Got {len(names)} names."
            )
    index = {n: i for i, n in enumerate(names)}
    getter = _ArrayColumns(arr, index)
    return names, getter, arr.shape[0]


class _ArrayColumns:
    def __init__(self, arr: npt.NDArray[Any], index: dict[str, int]) -> None:
        self.arr = arr
        self.index = index

    def __call__(self, name: str) -> npt.NDArray[Any]:
        return self.arr[:, self.index[name]]


def _prediction_columns(predictions: Any, n_rows: int, what: str) -> dict[str, Any]:
    if predictions is None:
        return {}
    arr = np.asarray(predictions)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim not in (1, 2) or arr.shape[0] != n_rows:
        raise InvalidData(
            f"The {what} predictions must be (N,) or (N, K) with N = {n_rows} rows. "
            f"Got shape {arr.shape} instead."
        )
    if arr.ndim == 1:
        return {"prediction": arr}
    return {f"prediction[{k}]": arr[:, k] for k in range(arr.shape[1])}


# --------------------------------------------------------------------------- current


def _scipy_stats() -> Any:
    try:
        import scipy.stats
    except ImportError as exc:  # pragma: no cover - scipy comes with scikit-learn
        raise MissingDependency(
            "Drift p-values need scipy. It is not installed.",
            hint="pip install 'shipyard[monitoring]'",
        ) from exc
    return scipy.stats


@dataclass
class _NumericOut:
    d: float
    n: int
    n_missing: int
    psi: float
    small: npt.NDArray[np.float64] | None  # current values kept for an exact p-value


def _numeric_current(ref: _NumericRef, cur_sorted: npt.NDArray[np.float64]) -> _NumericOut:
    n2 = int(np.searchsorted(cur_sorted, np.inf, side="right"))
    n_missing = len(cur_sorted) - n2
    n1 = len(ref.values)
    if n1 == 0 or n2 == 0:
        return _NumericOut(math.nan, n2, n_missing, math.nan, None)
    c = cur_sorted[:n2]
    right = np.searchsorted(c, ref.distinct, side="right") / n2
    left = np.searchsorted(c, ref.distinct, side="left") / n2
    # F1 - F2 peaks at a reference point; F2 - F1 at a reference point or at the last
    # current point before the next reference point (F2 just before it, F1 of the previous).
    d_plus = float(np.max(ref.ecdf - right))
    d_minus = max(float(np.max(right - ref.ecdf)), float(np.max(left - ref.ecdf_before)))
    d = max(d_plus, d_minus, 0.0)
    cur_p = np.maximum(_bin_counts(c, ref.edges) / n2, PSI_EPSILON)
    ref_p = np.maximum(ref.proportions, PSI_EPSILON)
    psi = float(np.sum((cur_p - ref_p) * np.log(cur_p / ref_p)))
    small = c.copy() if max(n1, n2) <= EXACT_KS_MAX_N else None
    return _NumericOut(d, n2, n_missing, psi, small)


def _ks_p_values(
    refs: list[_NumericRef], outs: list[_NumericOut], exact_max_pairs: int | None = None
) -> list[float]:
    """p-values exactly as ``scipy.stats.ks_2samp(method="auto")``.

    With ``exact_max_pairs``, the exact method is used only while ``n1 * n2`` is at most
    that (its cost grows with the product: 0.2 s a column at 5,000 x 10,000); larger
    samples get Smirnov's asymptotic p-value, as scipy's ``method="asymp"``.
    """
    stats = _scipy_stats()
    p = [math.nan] * len(outs)
    asymp_i, asymp_d, asymp_en = [], [], []
    for i, (ref, out) in enumerate(zip(refs, outs, strict=True)):
        if math.isnan(out.d):
            continue
        budget_ok = exact_max_pairs is None or len(ref.values) * out.n <= exact_max_pairs
        if out.small is not None and budget_ok:
            with warnings.catch_warnings():
                # scipy warns when the exact method fails and it falls back to asymp
                warnings.simplefilter("ignore", RuntimeWarning)
                p[i] = float(stats.ks_2samp(ref.values, out.small).pvalue)
        else:
            m, n = sorted([float(len(ref.values)), float(out.n)], reverse=True)
            asymp_i.append(i)
            asymp_d.append(out.d)
            asymp_en.append(np.round(m * n / (m + n)))
    if asymp_i:
        probs = np.clip(kstwo_sf(np.array(asymp_d), np.array(asymp_en)), 0.0, 1.0)
        for i, prob in zip(asymp_i, probs, strict=True):
            p[i] = float(prob)
    return p


def _chi2(ref: _CategoricalRef, column: npt.NDArray[Any]) -> tuple[float, float, int, int]:
    """(statistic, p-value, n_current, n_missing) as ``scipy.stats.chi2_contingency``."""
    cats, counts, n_missing = _category_counts(column)
    n2 = int(counts.sum())
    n1 = int(ref.counts.sum())
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan, n2, n_missing
    order = {c: i for i, c in enumerate(ref.categories)}
    new = [c for c in cats.tolist() if c not in order]
    for c in new:
        order[c] = len(order)
    observed = np.zeros((2, len(order)), dtype=np.float64)
    observed[0, : len(ref.counts)] = ref.counts
    observed[1, [order[c] for c in cats.tolist()]] = counts
    dof = observed.shape[1] - 1
    if dof == 0:
        return 0.0, 1.0, n2, n_missing
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    if dof == 1:  # Yates' correction, as chi2_contingency(correction=True)
        diff = expected - observed
        observed = observed + np.minimum(0.5, np.abs(diff)) * np.sign(diff)
    stat = float(((observed - expected) ** 2 / expected).sum())
    return stat, float(_scipy_stats().chi2.sf(stat, dof)), n2, n_missing


def _sort_block(get: Any, chunk: list[str]) -> npt.NDArray[np.float64]:
    if isinstance(get, _ArrayColumns):
        idx = [get.index[n] for n in chunk]
        block = np.array(get.arr[:, idx].T, dtype=np.float64, order="C")
    else:
        block = np.stack([_as_float(get(n)) for n in chunk])
    block.sort(axis=1)
    return block


def drift(
    reference: Reference,
    current: ColumnData,
    *,
    feature_names: Sequence[str] | None = None,
    predictions: Any = None,
    thresholds: DriftThresholds | None = None,
    workers: int | None = None,
    exact_max_pairs: int | None = None,
) -> DriftReport:
    """Test one window of current data against the reference.

    Args:
        reference: Built by `Reference.build`.
        current: Same forms as the reference data; it must hold every reference feature
            (extra columns are ignored and listed in ``unused_columns``).
        feature_names: Column names when ``current`` is a 2-D array.
        predictions: The model's outputs on the current rows, shaped as the reference's.
        thresholds: Verdict thresholds (defaults: KS p < 0.05, PSI > 0.2, chi² p < 0.05).
        workers: Threads for the numeric columns (default: the CPU count, at most 8).
        exact_max_pairs: Exact KS p-values only while reference rows x current rows is
            at most this (None: as scipy's ``method="auto"``, whatever the cost).

    Raises:
        FeatureMismatch: a reference feature is missing, or predictions are missing or
            shaped differently from the reference's.
        InvalidData: wrong shapes or lengths, or text in a numeric feature.
    """
    thresholds = thresholds or DriftThresholds()
    names, get, n_rows = _columns(current, feature_names, "current")
    missing = [f for f in reference.features if f not in set(names)]
    if missing:
        raise FeatureMismatch(
            f"The current data must hold every reference feature. Missing: {missing}; "
            f"got columns {names}.",
            hint="Rename the columns, or rebuild the reference from the same features.",
        )
    pred_cols = _prediction_columns(predictions, n_rows, "current")
    if pred_cols and tuple(pred_cols) != reference.prediction_columns:
        raise FeatureMismatch(
            f"predictions must have columns {list(reference.prediction_columns)} like the "
            f"reference's. Got {list(pred_cols) or 'none'}."
        )
    unused = tuple(n for n in names if n not in set(reference.features))

    def column(name: str) -> npt.NDArray[Any]:
        return np.asarray(pred_cols[name] if name in pred_cols else get(name))

    wanted = [*reference.features, *(reference.prediction_columns if pred_cols else ())]
    numeric = [n for n in wanted if reference.kinds[n] == "numeric"]
    array_features = [n for n in numeric if n in reference.features]
    outs: dict[str, _NumericOut] = {}

    def work(chunk: list[str]) -> list[tuple[str, _NumericOut]]:
        src = get if chunk[0] in reference.features else column
        block = _sort_block(src, chunk)
        return [
            (n, _numeric_current(reference._columns[n], row))  # type: ignore[arg-type]
            for n, row in zip(chunk, block, strict=True)
        ]

    chunks = [
        array_features[i : i + _CHUNK_COLUMNS]
        for i in range(0, len(array_features), _CHUNK_COLUMNS)
    ]
    chunks += [[n] for n in numeric if n not in reference.features]
    n_workers = workers or min(8, os.cpu_count() or 1)
    if n_workers > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(n_workers, thread_name_prefix="shipyard-drift") as pool:
            for part in pool.map(work, chunks):
                outs.update(part)
    else:
        for chunk in chunks:
            outs.update(work(chunk))
    refs = [reference._columns[n] for n in numeric]
    p_values = dict(
        zip(numeric, _ks_p_values(refs, [outs[n] for n in numeric], exact_max_pairs), strict=True)  # type: ignore[arg-type]
    )

    results: dict[str, list[DriftResult]] = {}
    for name in wanted:
        ref = reference._columns[name]
        n_ref = len(ref.values) if isinstance(ref, _NumericRef) else int(ref.counts.sum())
        if isinstance(ref, _NumericRef):
            o = outs[name]
            p = p_values[name]
            results[name] = [
                DriftResult(
                    name, "numeric", "ks", _num(o.d), _num(p), thresholds.ks_p_value,
                    None if math.isnan(p) else p < thresholds.ks_p_value,
                    n_ref, o.n, o.n_missing,
                ),
                DriftResult(
                    name, "numeric", "psi", _num(o.psi), None, thresholds.psi,
                    None if math.isnan(o.psi) else o.psi > thresholds.psi,
                    n_ref, o.n, o.n_missing,
                ),
            ]  # fmt: skip
        else:
            stat, p, n2, n_miss = _chi2(ref, column(name))
            results[name] = [
                DriftResult(
                    name, "categorical", "chi2", _num(stat), _num(p), thresholds.chi2_p_value,
                    None if math.isnan(p) else p < thresholds.chi2_p_value,
                    n_ref, n2, n_miss,
                )
            ]  # fmt: skip
    return DriftReport(
        features=tuple(r for n in reference.features for r in results[n]),
        prediction=tuple(r for n in wanted[len(reference.features) :] for r in results[n]),
        thresholds=thresholds,
        n_reference=reference.n_rows,
        n_current=n_rows,
        unused_columns=unused,
    )


def _num(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def drift_windows(
    reference: Reference,
    current: ColumnData,
    *,
    window: int,
    feature_names: Sequence[str] | None = None,
    predictions: Any = None,
    thresholds: DriftThresholds | None = None,
) -> list[DriftReport]:
    """`drift` for consecutive row windows of ``window`` rows (the last may be shorter)."""
    if not isinstance(window, int) or window < 1:
        raise InvalidData(f"window must be a positive number of rows. Got {window!r} instead.")
    names, get, n_rows = _columns(current, feature_names, "current")
    preds = None if predictions is None else np.asarray(predictions)
    reports = []
    for start in range(0, n_rows, window):
        part = {n: np.asarray(get(n))[start : start + window] for n in names}
        reports.append(
            drift(
                reference,
                part,
                predictions=None if preds is None else preds[start : start + window],
                thresholds=thresholds,
            )
        )
    return reports

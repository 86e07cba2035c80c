"""A version's drift and estimated quality: its stored reference against its newest logged rows.

The reference of a version is kept at ``<monitoring dir>/references/<model>/<version>.ref``:
one file, written atomically, holding a small JSON header (where the data came from, how
its tensors map to feature names, which output is the prediction) and the
:class:`~shipyard.monitoring.drift.Reference` itself. The model name is checked by the
registry's naming rules and the version must be a positive integer, so a name can never
reach outside the folder.

How tensors become features, on both sides alike (the header's ``layout``): a 1-D input
or an (N, 1) input is one feature named as the input; an (N, F) input is F features,
named by the task schema's ``feature_names`` (or the data file's columns) when they fit,
else ``<input>[j]``. Inputs of higher rank (images) are left out of drift. The
prediction is the task schema's scores output when there is one, else its label output,
else the first output.

The current window is the newest ``drift_window`` logged rows, read with
:func:`~shipyard.monitoring.predlog.read_window`. CBPE (label-free accuracy, precision,
recall and F1) is estimated over the same window for classifiers with a scores output,
and, over the newest labelled rows, set beside the quality actually measured on them.

Imports: config, spec, errors, _utils, monitoring (numpy).
"""

from __future__ import annotations

import json
import logging
import math
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shipyard._utils.fs import atomic_write_bytes
from shipyard.errors import InvalidData, InvalidInputError, ShipyardError
from shipyard.monitoring.drift import DriftThresholds, Reference, drift
from shipyard.monitoring.estimate import estimate_performance, realized_performance
from shipyard.monitoring.predlog import read_window
from shipyard.spec import DType, TaskType, validate_name

if TYPE_CHECKING:
    from shipyard._utils.crypto import KeyProvider
    from shipyard.config import MonitoringSettings
    from shipyard.monitoring.feedback import LabelledRow
    from shipyard.spec import Signature, TaskSchema

__all__ = [
    "REFERENCES",
    "ReferenceSample",
    "StatusCache",
    "StoredReference",
    "Window",
    "drift_section",
    "estimate_series",
    "estimated_section",
    "feature_layout",
    "load_reference",
    "prediction_output",
    "read_latest",
    "reference_path",
    "thresholds_from",
]

logger = logging.getLogger(__name__)

REFERENCES = "references"
EXACT_KS_MAX_PAIRS = 2_000_000
"""Status computes exact KS p-values (as scipy's ``method="auto"``) only while reference
rows x window rows is at most this, and Smirnov's asymptotic ones past it: the exact
method costs 0.2 s a column at 5,000 x 10,000 rows, the asymptotic one microseconds."""
"""The folder, under the monitoring folder, of the per-version references."""

REFERENCE_MAX_ROWS = 100_000
"""A reference keeps a uniform sample of at most this many rows of its data."""

_MAGIC = b"SHPYREF1"
_HEADER = struct.Struct(">I")


# ------------------------------------------------------------------------------ storage


def reference_path(root: Path, model: str, version: int | str) -> Path:
    """Where ``model``'s ``version`` keeps its reference, under the monitoring folder.

    Raises:
        InvalidName: the model name breaks the registry's naming rules (``..``, ``/`` …).
        InvalidInputError: the version is not a positive integer.
    """
    validate_name(model)
    text = str(version)
    if not text.isdigit() or int(text) < 1 or len(text) > 19:
        raise InvalidInputError(f"A version must be a positive integer. Got {version!r} instead.")
    return root / REFERENCES / model / f"{int(text)}.ref"


@dataclass(frozen=True)
class StoredReference:
    """A version's reference and what the header says about it."""

    reference: Reference
    meta: dict[str, Any]

    @property
    def layout(self) -> dict[str, list[str] | None]:
        """Input name → its feature names (None: a one-column input, named as itself)."""
        return dict(self.meta.get("layout", {}))

    @property
    def prediction_output(self) -> str | None:
        """The output whose drift is the prediction's."""
        found = self.meta.get("prediction_output")
        return str(found) if found is not None else None

    def summary(self) -> dict[str, Any]:
        """What ``status`` shows of the reference."""
        keys = ("source", "rows", "rows_seen", "created", "how", "prediction_output")
        out = {k: self.meta.get(k) for k in keys}
        out["features"] = list(self.reference.features)
        return out


def save_reference(path: Path, reference: Reference, meta: Mapping[str, Any]) -> None:
    """Write a reference and its header to ``path`` in one atomic write."""
    header = json.dumps(dict(meta), sort_keys=True).encode()
    atomic_write_bytes(path, _MAGIC + _HEADER.pack(len(header)) + header + reference.to_bytes())


def load_reference(root: Path, model: str, version: int | str) -> StoredReference | None:
    """The stored reference of ``model:version``, or None when it has none.

    Raises:
        InvalidName, InvalidInputError: see :func:`reference_path`.
        InvalidData: the file is not a reference written by shipyard.
    """
    path = reference_path(root, model, version)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    start = len(_MAGIC) + _HEADER.size
    if not data.startswith(_MAGIC) or len(data) < start:
        raise InvalidData(f"A drift reference must start with {_MAGIC!r}. {path} does not.")
    (size,) = _HEADER.unpack_from(data, len(_MAGIC))
    try:
        meta = json.loads(data[start : start + size])
    except ValueError as exc:
        raise InvalidData(f"The drift reference {path} has an unreadable header.") from exc
    return StoredReference(Reference.from_bytes(data[start + size :]), meta)


# ------------------------------------------------------------------------------ features


def feature_layout(
    signature: Signature, feature_names: Sequence[str] | None = None
) -> tuple[dict[str, list[str] | None], list[str]]:
    """How the inputs of ``signature`` become named features, and the inputs left out.

    Returns:
        ``(layout, skipped)``: layout maps an input to its F feature names, or to None
        for a one-column input; ``skipped`` lists inputs of rank above 2 or of unknown
        width.
    """
    layout: dict[str, list[str] | None] = {}
    skipped: list[str] = []
    single = len(signature.inputs) == 1
    for spec in signature.inputs:
        shape = spec.shape
        if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
            layout[spec.name] = None
        elif len(shape) == 2 and shape[1] is not None and spec.dtype is not DType.BYTES:
            width = int(shape[1])
            names = list(feature_names) if feature_names is not None else []
            if single and len(names) == width and len(set(names)) == width:
                layout[spec.name] = [str(n) for n in names]
            else:
                layout[spec.name] = [f"{spec.name}[{j}]" for j in range(width)]
        else:
            skipped.append(spec.name)
    return layout, skipped


def _columns(
    tensors: Mapping[str, npt.NDArray[Any]], layout: Mapping[str, Sequence[str] | None], n: int
) -> tuple[dict[str, npt.NDArray[Any]], list[str]]:
    """Named 1-D feature columns of ``n`` rows; features absent from ``tensors`` are NaN."""
    cols: dict[str, npt.NDArray[Any]] = {}
    absent: list[str] = []
    for name, names in layout.items():
        arr = tensors.get(name)
        width = 1 if names is None else len(names)
        if arr is not None:
            arr = np.asarray(arr)
            arr = arr.reshape(len(arr), -1) if arr.ndim != 1 else arr.reshape(-1, 1)
        if arr is None or arr.shape[1] != width or len(arr) != n:
            absent.extend([name] if names is None else names)
            arr = np.full((n, width), np.nan)
        if names is None:
            cols[name] = arr[:, 0]
        else:
            for j, feature in enumerate(names):
                cols[feature] = arr[:, j]
    return cols, absent


def prediction_output(task: TaskSchema, output_names: Sequence[str]) -> str | None:
    """The output whose distribution is the prediction's (see the module docstring)."""
    for name in (task.scores_output, task.label_output):
        if name is not None and name in output_names:
            return name
    return output_names[0] if output_names else None


def _prediction(outputs: Mapping[str, npt.NDArray[Any]], name: str | None) -> Any:
    if name is None or name not in outputs:
        return None
    arr = np.asarray(outputs[name])
    if arr.ndim > 2:
        arr = arr.reshape(len(arr), -1)
    return arr


class ReferenceSample:
    """Rows of inputs and outputs gathered batch by batch into a reference.

    Keeps a uniform sample of at most ``max_rows`` rows (a reservoir), so a reference
    built from a large file stays small.

    Args:
        signature: The version's signature.
        task: The version's task schema (feature names, which output is the prediction).
        feature_names: Names for a tabular model's columns, used when the task has none.
        max_rows: The most rows kept.
        seed: Seed of the reservoir's draws.
    """

    def __init__(
        self,
        signature: Signature,
        task: TaskSchema,
        *,
        feature_names: Sequence[str] | None = None,
        max_rows: int = REFERENCE_MAX_ROWS,
        seed: int = 0,
    ) -> None:
        self.layout, self.skipped = feature_layout(signature, task.feature_names or feature_names)
        self.output = prediction_output(task, [s.name for s in signature.outputs])
        self.max_rows = max_rows
        self.seen = 0
        self._rng = np.random.default_rng(seed)
        self._parts: list[tuple[dict[str, npt.NDArray[Any]], Any]] = []
        self._full: tuple[dict[str, npt.NDArray[Any]], Any] | None = None

    def add(
        self, inputs: Mapping[str, npt.NDArray[Any]], outputs: Mapping[str, npt.NDArray[Any]]
    ) -> None:
        """Add one batch: the inputs as fed to the model and its outputs on them."""
        n = len(next(iter(inputs.values()))) if inputs else 0
        if n == 0:
            return
        cols, _ = _columns(inputs, self.layout, n)
        cols = {k: np.array(v) for k, v in cols.items()}  # own the data, not a view
        pred = _prediction(outputs, self.output)
        pred = None if pred is None else np.array(pred)
        if self._full is None:
            room = self.max_rows - self.seen
            if n <= room:
                self._parts.append((cols, pred))
                self.seen += n
                return
            head = {k: v[:room] for k, v in cols.items()}
            self._parts.append((head, None if pred is None else pred[:room]))
            self._full = self._concat()
            self._parts = []
            cols = {k: v[room:] for k, v in cols.items()}
            pred = None if pred is None else pred[room:]
            self.seen += room
            n -= room
        held, held_pred = self._full
        index = self.seen + np.arange(n)
        slots = (self._rng.random(n) * (index + 1)).astype(np.int64)
        keep = slots < self.max_rows
        for k, v in held.items():
            v[slots[keep]] = cols[k][keep]
        if held_pred is not None and pred is not None:
            held_pred[slots[keep]] = pred[keep]
        self.seen += n

    def _concat(
        self, parts: list[tuple[dict[str, npt.NDArray[Any]], Any]] | None = None
    ) -> tuple[dict[str, npt.NDArray[Any]], Any]:
        parts = self._parts if parts is None else parts
        if not parts:
            return {name: np.empty(0) for name in self._feature_names()}, None
        cols = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
        preds = [p[1] for p in parts]
        pred = None if any(p is None for p in preds) else np.concatenate(preds)
        return cols, pred

    def _feature_names(self) -> list[str]:
        return [f for name, names in self.layout.items() for f in (names or [name])]

    @property
    def rows(self) -> int:
        """Rows held (at most ``max_rows``)."""
        return min(self.seen, self.max_rows)

    def save(self, root: Path, model: str, version: int | str, **meta: Any) -> StoredReference:
        """Build the reference from what was added and store it for ``model:version``.

        Raises:
            InvalidData: nothing was added, or the model has no input drift can use.
            InvalidName, InvalidInputError: see :func:`reference_path`.
        """
        if not self.layout:
            raise InvalidData(
                "A drift reference needs at least one 1-D or (N, F) input. "
                f"This model's inputs {self.skipped} are all of higher rank."
            )
        cols, pred = self._full if self._full is not None else self._concat()
        if not cols or len(next(iter(cols.values()))) == 0:
            raise InvalidData("A drift reference must be built from at least one row. Got 0.")
        reference = Reference.build(cols, predictions=pred)
        header = {
            "format": 1,
            "model": model,
            "version": int(version),
            "created": time.time(),
            "rows": self.rows,
            "rows_seen": self.seen,
            "layout": self.layout,
            "skipped_inputs": self.skipped,
            "prediction_output": self.output if pred is not None else None,
            **meta,
        }
        save_reference(reference_path(root, model, version), reference, header)
        return StoredReference(reference, header)


# --------------------------------------------------------------------------- status parts


def thresholds_from(settings: MonitoringSettings) -> DriftThresholds:
    """The drift verdict thresholds configured in ``settings``."""
    return DriftThresholds(
        ks_p_value=settings.drift_ks_p_value,
        psi=settings.drift_psi,
        chi2_p_value=settings.drift_chi2_p_value,
        numeric_verdict=settings.drift_verdict,
    )


def _hint(model: str, version: int | str) -> str:
    return f"shipyard monitor set-reference {model}:{version} --data FILE"


@dataclass
class Window:
    """The newest logged rows of one version: its inputs and outputs as arrays."""

    inputs: dict[str, npt.NDArray[Any]]
    outputs: dict[str, npt.NDArray[Any]]
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        lengths = [len(v) for v in (*self.inputs.values(), *self.outputs.values())]
        self.rows = max(lengths, default=0)


def read_latest(
    root: Path, model: str, version: int | str, rows: int, keys: KeyProvider | None = None
) -> Window:
    """The newest ``rows`` logged rows of ``model:version`` (inputs and outputs)."""
    v = str(version)
    return Window(
        read_window(root, model, v, rows, keys=keys),
        read_window(root, model, v, rows, part="outputs", keys=keys),
    )


def drift_section(
    root: Path,
    model: str,
    version: int | str,
    window: Window,
    *,
    thresholds: DriftThresholds | None = None,
    stored: StoredReference | None = None,
) -> dict[str, Any]:
    """The ``drift`` part of a version's status.

    ``{"reference": None, "hint": ...}`` without a stored reference; otherwise the
    reference's summary, the window's size, and :meth:`DriftReport.to_dict` (per feature
    and per prediction column: test, statistic, p-value, threshold, verdict; the drifted
    features, their share, and whether the prediction drifted). Features the log lacks
    (redacted, or inputs logged as summaries) are listed in ``absent`` with no verdict.
    """
    if stored is None:
        try:
            stored = load_reference(root, model, version)
        except InvalidData as exc:
            return {"reference": None, "error": str(exc), "code": exc.code}
    if stored is None:
        return {"reference": None, "hint": _hint(model, version)}
    out: dict[str, Any] = {"reference": stored.summary()}
    n_in = min((len(v) for v in window.inputs.values()), default=0)
    n = n_in or window.rows
    if n == 0:
        return {**out, "n_current": 0, "note": "No logged rows of this version yet."}
    cols, absent = _columns({k: v[-n:] for k, v in window.inputs.items()}, stored.layout, n)
    pred = _prediction(window.outputs, stored.prediction_output)
    if pred is not None and stored.reference.prediction_columns and len(pred) >= n:
        pred = pred[-n:]
    else:
        pred = None
    try:
        report = drift(
            stored.reference,
            cols,
            predictions=pred,
            thresholds=thresholds,
            exact_max_pairs=EXACT_KS_MAX_PAIRS,
        )
    except ShipyardError as exc:
        return {**out, "error": str(exc), "code": exc.code}
    return {**out, **report.to_dict(), "absent": absent}


def _scalar(value: Any) -> Any:
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def _label_of(value: Any, known: Mapping[str, Any]) -> Any:
    value = _scalar(value)
    if str(value) in known:
        return known[str(value)]
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return known.get(str(int(f)) if f.is_integer() else str(f), value)


_KEYS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")


def estimated_section(
    task: TaskSchema,
    window: Window,
    labelled: Sequence[LabelledRow] = (),
) -> dict[str, Any]:
    """The ``estimated`` part of a version's status: CBPE over the window.

    For a classifier with a scores output: the estimated accuracy, macro precision,
    recall and F1 of the window's rows (``n``), and under ``labelled`` the estimate on the
    newest labelled rows beside the quality measured on them (and the difference). For
    other models ``{"available": False, "reason": ...}``.
    """
    base: dict[str, Any] = {"method": "cbpe"}
    scores = task.scores_output
    if task.task is not TaskType.CLASSIFICATION or scores is None:
        return {
            **base,
            "available": False,
            "reason": "Estimation needs a classifier whose task schema names a scores output.",
        }
    labels = list(task.class_labels) if task.class_labels else None
    out: dict[str, Any] = {**base, "available": True, "n": 0}
    proba = window.outputs.get(scores)
    try:
        if proba is not None and len(proba):
            est = estimate_performance(_matrix(proba), labels=labels)
            out.update({"n": est.n, **{k: getattr(est, k) for k in _KEYS}})
            out["per_class"] = est.per_class
        rows = [r for r in labelled if scores in r.outputs]
        if rows:
            p = _matrix(np.asarray([r.outputs[scores] for r in rows], dtype=np.float64))
            names = labels if labels is not None else list(range(p.shape[1] if p.ndim == 2 else 2))
            known = {str(c): c for c in names}
            y = [_label_of(r.label, known) for r in rows]
            both = realized_performance(p, y, labels=names)
            out["labelled"] = {
                "n": len(rows),
                "estimated": {k: both["estimated"][k] for k in _KEYS},
                "measured": {k: both["realized"].get(k) for k in _KEYS},
                "difference": both["difference"],
            }
    except InvalidData as exc:
        return {**base, "available": False, "reason": str(exc), "code": exc.code}
    return out


def _matrix(proba: Any) -> npt.NDArray[np.float64]:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    return p.reshape(len(p), -1) if p.ndim > 2 else p


def estimate_series(
    task: TaskSchema, times: Sequence[float], scores: Sequence[Any]
) -> list[tuple[float, float]]:
    """CBPE accuracy of buckets of rows: ``(time, estimated accuracy)`` per bucket given.

    ``times`` and ``scores`` are parallel: a bucket's time and its rows' scores.
    """
    labels = list(task.class_labels) if task.class_labels else None
    out = []
    for t, s in zip(times, scores, strict=True):
        try:
            est = estimate_performance(_matrix(s), labels=labels)
        except InvalidData:
            continue
        if math.isfinite(est.accuracy):
            out.append((t, est.accuracy))
    return out


class StatusCache:
    """Computed status parts reused for ``ttl_s`` (the server's monitoring endpoint).

    Args:
        ttl_s: How long a computed value is served again; 0 disables the cache.
        clock: Seconds, monotonic.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._values: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``compute()`` (stored) when absent or stale."""
        now = self._clock()
        with self._lock:
            hit = self._values.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        value = compute()
        if self.ttl_s > 0:
            with self._lock:
                self._values[key] = (now, value)
        return value

"""Live quality of one model version over sliding windows, by time and by count.

Joined events (prediction, label, time) go in with :meth:`LiveQuality.add`; a
:meth:`LiveQuality.snapshot` answers, per window, the metrics offline evaluation reports,
computed by the same code (:mod:`shipyard.metrics`): accuracy, precision, recall, F1
(macro and per class), the confusion matrix and, for binary classifiers given a score,
ROC AUC; MAE, RMSE and R² for regressors. A metric that is undefined in a window (no
labelled row, AUC with one class present) is ``None`` (JSON ``null``).

Events are kept in time order (their ``at``: the prediction's time, so a label that
arrives late lands where its prediction was), and a count window ``last_N`` is the N
newest predictions that have labels. An event given a ``key`` (say the request id and
row) replaces an earlier event of the same key, as a corrected label replaces the old one
in the feedback store: rebuilding from the store gives the same windows.

Memory is bounded: at most ``capacity`` events are kept (the oldest go first); when
every window is a time window, events older than the longest one are evicted on every
add and read too. A read copies the rows of a window under the lock and computes outside
it: O(log n + window).

Imports: numpy, shipyard.errors, shipyard.metrics, shipyard._utils.clock.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from shipyard._utils.clock import Clock, MonotonicClock
from shipyard.errors import InvalidInputError
from shipyard.metrics.classification import classification_metrics, roc_auc_binary
from shipyard.metrics.regression import regression_metrics

__all__ = ["DEFAULT_WINDOWS", "LiveQuality", "Window", "parse_window"]

Kind = Literal["classification", "regression"]

_WINDOW_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(s|m|h|d)|last_?(\d+))$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class Window:
    """A sliding window: the last ``seconds`` of events, or the last ``count`` events."""

    name: str
    seconds: float | None = None
    count: int | None = None


def parse_window(name: str) -> Window:
    """A window from its name: ``"5m"``, ``"1h"``, ``"30s"``, ``"1d"`` or ``"last_1000"``.

    Raises:
        InvalidInputError: the name matches neither form.
    """
    m = _WINDOW_RE.match(name.strip())
    if m is None:
        raise InvalidInputError(
            f"A window is '<number><s|m|h|d>' (e.g. '5m') or 'last_<N>'. Got {name!r} instead.",
            hint="Use e.g. '5m', '1h' or 'last_1000'.",
        )
    if m.group(3) is not None:
        count = int(m.group(3))
        if count < 1:
            raise InvalidInputError(f"A count window needs N >= 1. Got {name!r} instead.")
        return Window(name=name, count=count)
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0:
        raise InvalidInputError(f"A time window needs a positive length. Got {name!r} instead.")
    return Window(name=name, seconds=seconds)


DEFAULT_WINDOWS = ("5m", "1h", "last_1000")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


Event = tuple[float, Any, Any, float | None, Hashable | None]


def _at(event: Event) -> float:
    return event[0]


class LiveQuality:
    """Sliding-window quality of one (model, version); thread-safe.

    Args:
        kind: ``"classification"`` or ``"regression"``.
        windows: Window names (see :func:`parse_window`) or :class:`Window` objects.
        capacity: Most events kept; must cover the largest count window.
        clock: Source of time (monotonic seconds) when :meth:`add` is given none.
        labels: For classifiers, the classes to report (default: those seen in a window).
        pos_label: For binary classifiers, the class whose score is given (ROC AUC).
    """

    def __init__(
        self,
        kind: Kind,
        windows: Sequence[str | Window] = DEFAULT_WINDOWS,
        *,
        capacity: int = 100_000,
        clock: Clock | None = None,
        labels: Sequence[Any] | None = None,
        pos_label: Any = 1,
    ) -> None:
        if kind not in ("classification", "regression"):
            raise InvalidInputError(
                f"kind must be 'classification' or 'regression'. Got {kind!r} instead."
            )
        self.kind: Kind = kind
        self.windows = [w if isinstance(w, Window) else parse_window(w) for w in windows]
        if not self.windows:
            raise InvalidInputError("LiveQuality needs at least one window. Got none instead.")
        if len({w.name for w in self.windows}) != len(self.windows):
            raise InvalidInputError("Window names must be unique.")
        need = max((w.count or 0) for w in self.windows)
        if capacity < max(need, 1):
            raise InvalidInputError(
                f"capacity must cover the largest count window ({need}). Got {capacity} instead."
            )
        self.capacity = capacity
        self.clock: Clock = clock or MonotonicClock()
        self.labels = None if labels is None else list(labels)
        self.pos_label = pos_label
        times = [w.seconds for w in self.windows if w.seconds is not None]
        # a count window keeps its rows however old they are: evict by age only without one
        only_time = all(w.count is None for w in self.windows)
        self._max_age = max(times) if times and only_time else None
        self._events: list[Event] = []  # sorted by time
        self._keys: dict[Hashable, float] = {}
        self._lock = threading.Lock()
        self.total = 0

    def add(
        self,
        y_pred: Any,
        y_true: Any,
        *,
        score: float | None = None,
        at: float | None = None,
        key: Hashable | None = None,
    ) -> None:
        """Record one labelled prediction (``score``: the positive-class probability)."""
        self.add_many(
            [y_pred],
            [y_true],
            scores=None if score is None else [score],
            at=at,
            keys=None if key is None else [key],
        )

    def add_many(
        self,
        y_pred: Sequence[Any],
        y_true: Sequence[Any],
        *,
        scores: Sequence[float | None] | None = None,
        at: float | Sequence[float] | None = None,
        keys: Sequence[Hashable | None] | None = None,
    ) -> None:
        """Record labelled predictions; ``at`` is one time for all or one per row.

        ``keys`` name the rows: a row whose key was recorded before replaces that event.

        Raises:
            InvalidInputError: the sequences differ in length.
        """
        n = len(y_pred)
        if (
            len(y_true) != n
            or (scores is not None and len(scores) != n)
            or (keys is not None and len(keys) != n)
        ):
            raise InvalidInputError(
                "y_pred, y_true, scores and keys must have the same length. "
                f"Got {n}, {len(y_true)}, {None if scores is None else len(scores)} and "
                f"{None if keys is None else len(keys)} instead."
            )
        now = self.clock.now()
        if at is None:
            stamps: Sequence[float] = [now] * n
        elif isinstance(at, (int, float)):
            stamps = [float(at)] * n
        else:
            stamps = at
            if len(stamps) != n:
                raise InvalidInputError(f"at must hold {n} times. Got {len(stamps)} instead.")
        with self._lock:
            ev = self._events
            for i in range(n):
                key = None if keys is None else keys[i]
                if key is not None and key in self._keys:
                    self._drop(key)
                else:
                    self.total += 1
                event: Event = (
                    float(stamps[i]),
                    y_pred[i],
                    y_true[i],
                    None if scores is None else scores[i],
                    key,
                )
                if not ev or event[0] >= ev[-1][0]:
                    ev.append(event)
                else:  # a late label: its prediction goes where its time says
                    bisect.insort_right(ev, event, key=_at)
                if key is not None:
                    self._keys[key] = event[0]
            if len(ev) > self.capacity:
                self._forget(len(ev) - self.capacity)
            self._evict(now)

    def _drop(self, key: Hashable) -> None:
        ev, at = self._events, self._keys.pop(key)
        i = bisect.bisect_left(ev, at, key=_at)
        while i < len(ev) and ev[i][0] == at:
            if ev[i][4] == key:
                del ev[i]
                return
            i += 1

    def _forget(self, k: int) -> None:
        """Drop the ``k`` oldest events."""
        for event in self._events[:k]:
            if event[4] is not None:
                self._keys.pop(event[4], None)
        del self._events[:k]

    def _evict(self, now: float) -> None:
        if self._max_age is None:
            return
        k = bisect.bisect_left(self._events, now - self._max_age, key=_at)
        if k:
            self._forget(k)

    @property
    def max_age_s(self) -> float | None:
        """Age past which events are dropped: the longest window when all are by time."""
        return self._max_age

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def _rows(self, window: Window, now: float) -> list[Event]:
        with self._lock:
            self._evict(now)
            ev = self._events
            if window.count is not None:
                return ev[max(0, len(ev) - window.count) :]
            assert window.seconds is not None
            return ev[bisect.bisect_left(ev, now - window.seconds, key=_at) :]

    def window_metrics(self, window: Window | str) -> dict[str, Any]:
        """The metrics of one window (``n``: labelled rows in it)."""
        w = window if isinstance(window, Window) else self._window(window)
        rows = self._rows(w, self.clock.now())
        if self.kind == "regression":
            return self._regression(rows)
        return self._classification(rows)

    def _window(self, name: str) -> Window:
        for w in self.windows:
            if w.name == name:
                return w
        raise InvalidInputError(
            f"No window named {name!r}. Expected one of {[w.name for w in self.windows]}."
        )

    def _regression(self, rows: list[Event]) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(rows), "mae": None, "mse": None, "rmse": None, "r2": None}
        if rows:
            m = regression_metrics([r[2] for r in rows], [r[1] for r in rows])
            out.update({k: _finite(float(v)) for k, v in m.items()})
        return out

    def _classification(self, rows: list[Event]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": len(rows),
            "accuracy": None,
            "precision_macro": None,
            "recall_macro": None,
            "f1_macro": None,
            "roc_auc": None,
            "labels": [],
            "confusion_matrix": [],
            "per_class": {},
        }
        if not rows:
            return out
        y_true = [r[2] for r in rows]
        m = classification_metrics(y_true, [r[1] for r in rows], labels=self.labels)
        for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
            out[key] = _finite(m[key])
        out["labels"] = m["labels"]
        out["confusion_matrix"] = m["confusion_matrix"]
        out["per_class"] = m["per_class"]
        scored = [(r[2], r[3]) for r in rows if r[3] is not None]
        if scored:
            yt = np.asarray([s[0] for s in scored])
            n_pos = int(np.sum(yt == self.pos_label))
            if 0 < n_pos < len(scored):
                out["roc_auc"] = _finite(
                    roc_auc_binary(yt, [float(s[1]) for s in scored], pos_label=self.pos_label)
                )
        return out

    def snapshot(self) -> dict[str, Any]:
        """Every window's metrics as a JSON-serialisable dict."""
        return {
            "kind": self.kind,
            "total": self.total,
            "windows": {w.name: self.window_metrics(w) for w in self.windows},
        }

    def values(self) -> dict[str, float | None]:
        """Flat ``quality.<metric>`` → value per window, for alert rules.

        Keys are ``quality.<metric>@<window>``, and ``quality.<precision|recall|f1>[<class>]
        @<window>`` per class; the first window's values also appear under plain
        ``quality.<metric>``.
        """
        snap = self.snapshot()
        flat: dict[str, float | None] = {}
        for i, (name, metrics) in enumerate(snap["windows"].items()):
            items = [(k, v) for k, v in metrics.items() if k != "per_class"]
            for label, stats in metrics.get("per_class", {}).items():
                items += [(f"{s}[{label}]", stats[s]) for s in ("precision", "recall", "f1")]
            for key, value in items:
                if isinstance(value, (int, float)) or value is None:
                    flat[f"quality.{key}@{name}"] = value
                    if i == 0:
                        flat[f"quality.{key}"] = value
        return flat

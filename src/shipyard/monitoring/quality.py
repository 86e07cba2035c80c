"""Live quality of one model version over sliding windows, by time and by count.

Joined events (prediction, label, time) go in with :meth:`LiveQuality.add`; a
:meth:`LiveQuality.snapshot` answers, per window, the metrics offline evaluation reports,
computed by the same code (:mod:`shipyard.metrics`): accuracy, precision, recall, F1
(macro and per class), the confusion matrix and, for binary classifiers given a score,
ROC AUC; MAE, RMSE and R² for regressors. A metric that is undefined in a window (no
labelled row, AUC with one class present) is ``None`` (JSON ``null``).

Memory is bounded: events live in a ring buffer of ``capacity`` rows (the oldest go
first) and rows older than the longest time window are evicted on every add and read.
A read copies the rows of a window under the lock and computes outside it: O(window).

Imports: numpy, shipyard.errors, shipyard.metrics, shipyard._utils.clock.
"""

from __future__ import annotations

import math
import re
import threading
from collections import deque
from collections.abc import Sequence
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
        self._max_age = max(times) if times else None
        self._events: deque[tuple[float, Any, Any, float | None]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.total = 0

    def add(
        self, y_pred: Any, y_true: Any, *, score: float | None = None, at: float | None = None
    ) -> None:
        """Record one labelled prediction (``score``: the positive-class probability)."""
        self.add_many([y_pred], [y_true], scores=None if score is None else [score], at=at)

    def add_many(
        self,
        y_pred: Sequence[Any],
        y_true: Sequence[Any],
        *,
        scores: Sequence[float | None] | None = None,
        at: float | Sequence[float] | None = None,
    ) -> None:
        """Record labelled predictions; ``at`` is one time for all or one per row.

        Raises:
            InvalidInputError: the sequences differ in length.
        """
        n = len(y_pred)
        if len(y_true) != n or (scores is not None and len(scores) != n):
            raise InvalidInputError(
                "y_pred, y_true and scores must have the same length. "
                f"Got {n}, {len(y_true)} and {None if scores is None else len(scores)} instead."
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
            for i in range(n):
                s = None if scores is None else scores[i]
                self._events.append((float(stamps[i]), y_pred[i], y_true[i], s))
            self.total += n
            self._evict(now)

    def _evict(self, now: float) -> None:
        if self._max_age is None:
            return
        cutoff = now - self._max_age
        ev = self._events
        while ev and ev[0][0] < cutoff:
            ev.popleft()

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def _rows(self, window: Window, now: float) -> list[tuple[float, Any, Any, float | None]]:
        with self._lock:
            self._evict(now)
            if window.count is not None:
                k = min(window.count, len(self._events))
                return [self._events[i] for i in range(len(self._events) - k, len(self._events))]
            assert window.seconds is not None
            cutoff = now - window.seconds
            out = []
            for event in reversed(self._events):
                if event[0] < cutoff:
                    break
                out.append(event)
            out.reverse()
            return out

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

    def _regression(self, rows: list[tuple[float, Any, Any, float | None]]) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(rows), "mae": None, "mse": None, "rmse": None, "r2": None}
        if rows:
            m = regression_metrics([r[2] for r in rows], [r[1] for r in rows])
            out.update({k: _finite(float(v)) for k, v in m.items()})
        return out

    def _classification(self, rows: list[tuple[float, Any, Any, float | None]]) -> dict[str, Any]:
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

        Keys are ``quality.<metric>@<window>``; the first window's values also appear
        under plain ``quality.<metric>``.
        """
        snap = self.snapshot()
        flat: dict[str, float | None] = {}
        for i, (name, metrics) in enumerate(snap["windows"].items()):
            for key, value in metrics.items():
                if isinstance(value, (int, float)) or value is None:
                    flat[f"quality.{key}@{name}"] = value
                    if i == 0:
                        flat[f"quality.{key}"] = value
        return flat

"""Live quality of every tracked model version: one :class:`LiveQuality` each, fed labels.

The server keeps one :class:`LiveQualityTracker`. A version gets its LiveQuality when it
is loaded, seeded from the feedback store's labelled rows (a restart keeps live quality),
and is then fed the rows each feedback call joins, stamped with their prediction's time
and keyed by (request id, row) so a corrected label replaces the old one, as in the
store. ``monitor status``, which runs without a server, builds the same windows from the
store with :func:`windows_from_rows`.

Windows are on the wall clock (prediction times are ``time.time()`` stamps from the
prediction log, and outlive the process).

Imports: monitoring (quality, joined), spec and feedback (types), _utils.clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shipyard._utils.clock import Clock, WallClock
from shipyard.monitoring.joined import task_events
from shipyard.monitoring.quality import Kind, LiveQuality

if TYPE_CHECKING:
    from shipyard.monitoring.feedback import FeedbackStore, LabelledRow
    from shipyard.spec import TaskSchema

__all__ = ["LiveQualityTracker", "windows_from_rows"]

logger = logging.getLogger(__name__)

KINDS = ("classification", "regression")


def _new(task: TaskSchema, windows: Sequence[str], capacity: int, clock: Clock) -> LiveQuality:
    kind: Kind = "regression" if task.task.value == "regression" else "classification"
    return LiveQuality(kind, windows, capacity=capacity, clock=clock)


def _feed(quality: LiveQuality, task: TaskSchema, rows: Sequence[LabelledRow]) -> None:
    y_pred, y_true, scores, pos_label = task_events(task, rows)
    if pos_label is not None:
        quality.pos_label = pos_label
    quality.add_many(
        y_pred,
        y_true,
        scores=scores,
        at=[r.ts for r in rows],
        keys=[(r.request_id, r.row) for r in rows],
    )


def windows_from_rows(
    task: TaskSchema,
    rows: Sequence[LabelledRow],
    windows: Sequence[str],
    *,
    capacity: int = 100_000,
    clock: Clock | None = None,
) -> dict[str, Any] | None:
    """The live windows of a version's labelled rows (None for a task that has none).

    What the server's tracker answers for the same rows: the windows of a
    :meth:`LiveQuality.snapshot`.

    Raises:
        InvalidInputError: a malformed window, or ``capacity`` below a count window.
    """
    if task.task.value not in KINDS:
        return None
    quality = _new(task, windows, capacity, clock or WallClock())
    if rows:
        _feed(quality, task, rows)
    windows_out: dict[str, Any] = quality.snapshot()["windows"]
    return windows_out


class LiveQualityTracker:
    """One :class:`LiveQuality` per (model, version) whose task has quality metrics.

    Thread-safe: fed from the feedback path's worker thread, read by the ``/metrics``
    scrape, the monitoring endpoint and the alert engine.

    Args:
        windows: Window names (``monitoring.quality_windows``).
        capacity: Labelled rows kept per version (``monitoring.quality_capacity``).
        clock: Wall-clock seconds (the default); inject a ManualClock in tests.

    Raises:
        InvalidInputError: a malformed window, or ``capacity`` below a count window.
    """

    def __init__(
        self, windows: Sequence[str], capacity: int, *, clock: Clock | None = None
    ) -> None:
        self.windows = list(windows)
        self.capacity = capacity
        self.clock: Clock = clock or WallClock()
        LiveQuality("regression", self.windows, capacity=capacity)  # validates both, now
        self._tracked: dict[tuple[str, str], tuple[TaskSchema, LiveQuality]] = {}
        self._lock = threading.Lock()

    def track(self, model: str, version: str, task: TaskSchema) -> LiveQuality | None:
        """The version's LiveQuality, created on first call (None: no quality metrics)."""
        if task.task.value not in KINDS:
            return None
        with self._lock:
            found = self._tracked.get((model, version))
            if found is None:
                found = (task, _new(task, self.windows, self.capacity, self.clock))
                self._tracked[(model, version)] = found
            return found[1]

    def seed(self, store: FeedbackStore, model: str, version: str, task: TaskSchema) -> int:
        """Track a version and feed it the store's labelled rows; returns how many.

        Blocking (it reads the store): call it from a worker thread.
        """
        quality = self.track(model, version, task)
        if quality is None:
            return 0
        age = quality.max_age_s  # set when every window is by time: older rows are in none
        since = None if age is None else self.clock.now() - age
        rows = store.labelled(model, version, since=since)
        return self.feed(model, rows)

    def feed(self, model: str, rows: Iterable[LabelledRow]) -> int:
        """Add joined rows of ``model`` to their versions' windows; returns how many.

        Rows of untracked versions are skipped; rows whose outputs cannot be read as the
        version's task says are logged and skipped, never raised to the feedback caller.
        """
        by_version: dict[str, list[LabelledRow]] = {}
        for row in rows:
            by_version.setdefault(row.version, []).append(row)
        fed = 0
        for version, batch in by_version.items():
            with self._lock:
                found = self._tracked.get((model, version))
            if found is None:
                continue
            task, quality = found
            try:
                _feed(quality, task, batch)
            except Exception as exc:  # a malformed logged output must not fail feedback
                logger.warning(
                    "Live quality of %s:%s skipped %d labelled rows: %s",
                    model,
                    version,
                    len(batch),
                    exc,
                )
                continue
            fed += len(batch)
        return fed

    def tracked(self) -> list[tuple[str, str]]:
        """The (model, version) pairs tracked."""
        with self._lock:
            return list(self._tracked)

    def get(self, model: str, version: str) -> LiveQuality | None:
        """A tracked version's LiveQuality (None when untracked)."""
        with self._lock:
            found = self._tracked.get((model, version))
        return None if found is None else found[1]

    def windows_of(self, model: str, version: str) -> dict[str, Any] | None:
        """A tracked version's window metrics (None when untracked)."""
        quality = self.get(model, version)
        if quality is None:
            return None
        out: dict[str, Any] = quality.snapshot()["windows"]
        return out

    def snapshots(self) -> list[tuple[str, str, Mapping[str, Any]]]:
        """``(model, version, snapshot)`` of every tracked version (for Prometheus)."""
        with self._lock:
            items = list(self._tracked.items())
        return [(m, v, q.snapshot()) for (m, v), (_, q) in items]

    def values(self) -> dict[tuple[str, str], dict[str, float | None]]:
        """``{(model, version): {"quality.<metric>@<window>": value}}`` (for alert rules)."""
        with self._lock:
            items = list(self._tracked.items())
        return {key: q.values() for key, (_, q) in items}

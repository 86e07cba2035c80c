"""Offline monitoring commands: feed labels from a file, and read a model's live status.

Both work on the monitoring folder directly (``<home>/monitoring``), with or without a
server running: the feedback database is SQLite in WAL mode, shared safely.

Imports: registry, monitoring, spec, errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shipyard.errors import DataNotFound, InvalidData
from shipyard.monitoring.drift import DriftThresholds
from shipyard.monitoring.feedback import FeedbackStore
from shipyard.monitoring.joined import version_status
from shipyard.monitoring.live import windows_from_rows
from shipyard.monitoring.watch import drift_section, estimated_section, read_latest
from shipyard.registry import ModelRegistry
from shipyard.spec import ModelRef

__all__ = ["read_labels", "status"]

_FORMATS = (".csv", ".jsonl", ".parquet")


def read_labels(path: Path) -> list[dict[str, Any]]:
    """Label items from a CSV, JSON-lines or Parquet file.

    Columns: ``label`` and ``request_id`` (with optional ``row``) or ``key``.

    Raises:
        DataNotFound: no such file.
        InvalidData: an unknown format or missing columns.
    """
    if not path.is_file():
        raise DataNotFound(f"The labels file must exist. {str(path)!r} does not.")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        import orjson

        with open(path, "rb") as fh:
            return [orjson.loads(line) for line in fh if line.strip()]
    if suffix == ".csv":
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={"request_id": "string", "key": "string"}
            ),
        )
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    else:
        raise InvalidData(
            f"A labels file must be one of {list(_FORMATS)}. Got {suffix or 'no suffix'!r} instead."
        )
    names = set(table.column_names)
    if "label" not in names or not names & {"request_id", "key"}:
        raise InvalidData(
            "A labels file must have a 'label' column and a 'request_id' or 'key' column. "
            f"Got {sorted(names)} instead."
        )
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:  # a CSV has both columns when some rows use each: keep the one given
        for column in ("request_id", "key", "row"):
            if column in row and row[column] is None:
                del row[column]
    return rows


def status(
    registry: ModelRegistry,
    store: FeedbackStore,
    ref: str | ModelRef,
    window: int = 1000,
    *,
    root: Path | None = None,
    drift_window: int = 10_000,
    thresholds: DriftThresholds | None = None,
    quality_windows: Sequence[str] = (),
    quality_capacity: int = 100_000,
) -> dict[str, Any]:
    """Logged and labelled rows, live quality and offline metrics, per version of a model.

    A ref with a version (``iris:3``, ``iris@prod``) reports that version; a bare name
    reports every version that has logged predictions, or its ``default`` version.

    With ``root`` (the monitoring folder), each version also gets ``drift`` (its newest
    ``drift_window`` logged rows against its stored reference, judged by ``thresholds``)
    and ``estimated`` (label-free quality of those rows, beside the measured quality of
    the newest labelled ones); see :mod:`shipyard.monitoring.watch`.

    ``quality_windows`` (``monitoring.quality_windows``: by time, ``5m``, and by count,
    ``last_1000``) are built from the stored labelled rows and their prediction times, as
    a server's live quality holds them, and shown in ``live`` beside ``all``.

    Raises:
        InvalidInputError: a malformed window name.
    """
    parsed = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
    counts = store.counts(parsed.name)
    explicit = parsed.version is not None or parsed.alias is not None
    if explicit or not counts:
        versions = [registry.get(parsed)]
    else:
        versions = [registry.get(f"{parsed.name}:{v}") for v in sorted(counts, key=int)]
    out: dict[str, Any] = {"model": parsed.name, "versions": {}}
    for mv in versions:
        v = str(mv.version)
        rows = store.labelled(parsed.name, v)
        extra: dict[str, Any] = {}
        if root is not None:
            latest = read_latest(root, parsed.name, v, drift_window, store.keys)
            extra["drift"] = drift_section(root, parsed.name, v, latest, thresholds=thresholds)
            extra["estimated"] = estimated_section(mv.manifest.task, latest, rows[-drift_window:])
        if quality_windows:
            extra["windows"] = windows_from_rows(
                mv.manifest.task, rows, quality_windows, capacity=quality_capacity
            )
        out["versions"][v] = version_status(
            mv.manifest.task, counts.get(v, {}), rows, dict(mv.metrics), window, **extra
        )
    return out

"""Ground-truth feedback: labels joined to logged predictions, however late they arrive.

The prediction log indexes each logged request's outputs here (model, version, request
id, number of rows, optional client key). A label names a row by ``request_id`` (and
``row``, default 0) or by the client's ``key`` (the V2 request's ``id``) and is stored
against the version that made the prediction. Labels for rows that were never logged are
reported back as unknown, never dropped silently. A later label for the same row replaces
the earlier one.

SQLAlchemy Core on a SQLite file (WAL) by default, so a PostgreSQL URL can replace it.

Imports: errors (and SQLAlchemy).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    select,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from shipyard.errors import InvalidData

if TYPE_CHECKING:
    from shipyard._utils.crypto import KeyProvider

__all__ = ["FeedbackResult", "FeedbackStore", "LabelledRow", "parse_labels"]

_meta = MetaData()

predictions = Table(
    "predictions",
    _meta,
    Column("model", String(64), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("version", String(16), nullable=False),
    Column("ts", Float, nullable=False),
    Column("key", String(256), index=True),
    Column("rows", Integer, nullable=False),
    # the request's outputs (every row) as JSON, or "" when they are read from the
    # prediction-log segment named here, from its row ``first_row`` on
    Column("outputs", Text, nullable=False),
    Column("segment", String(128)),
    Column("first_row", Integer),
)

labels = Table(
    "labels",
    _meta,
    Column("model", String(64), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("row", Integer, primary_key=True),
    Column("version", String(16), nullable=False),
    Column("label", Text, nullable=False),
    Column("ts", Float, nullable=False),
)

MAX_LABELS_PER_CALL = 100_000

_INSERT_PREDICTIONS = (
    "INSERT OR IGNORE INTO predictions (model, request_id, version, ts, key, rows, outputs) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# One JSON array of [request_id, ts, key, rows, first_row] per written segment, unpacked
# by SQLite itself: half the cost of executemany's per-row parameter binding.
_INSERT_SEGMENT_ROWS = (
    "INSERT OR IGNORE INTO predictions "
    "(model, request_id, version, ts, key, rows, outputs, segment, first_row) "
    "SELECT ?, json_extract(value, '$[0]'), ?, json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), json_extract(value, '$[3]'), '', ?, "
    "json_extract(value, '$[4]') FROM json_each(?)"
)
_ADDED_COLUMNS = {"segment": "VARCHAR(128)", "first_row": "INTEGER"}


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(type(value).__name__)


def row_of(outputs: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Example ``i`` of a request's logged outputs."""
    return {name: values[i] for name, values in outputs.items()}


@dataclass(frozen=True, slots=True)
class LabelItem:
    """One label as sent: a row named by request id (and row) or by the client's key."""

    index: int
    label: Any
    request_id: str | None = None
    key: str | None = None
    row: int = 0


@dataclass(slots=True)
class FeedbackResult:
    """What a feedback call did: how many labels were joined, and which were unknown."""

    accepted: int = 0
    unknown: list[dict[str, Any]] = field(default_factory=list)
    joined: list[LabelledRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer of the feedback endpoint."""
        return {"accepted": self.accepted, "unknown": self.unknown}


@dataclass(frozen=True, slots=True)
class LabelledRow:
    """A logged prediction and its label."""

    version: str
    request_id: str
    row: int
    ts: float
    outputs: dict[str, Any]
    label: Any


def parse_labels(doc: Any) -> list[LabelItem]:
    """Validate a feedback body: ``{"labels": [...]}`` or a bare list of items.

    Raises:
        InvalidData: the body or an item is malformed (the message names the item).
    """
    items = doc.get("labels") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise InvalidData(
            'Feedback must be a non-empty list of labels, or {"labels": [...]}. '
            f"Got {type(items).__name__} instead.",
            hint='Send [{"request_id": "...", "row": 0, "label": 1}, ...].',
        )
    if len(items) > MAX_LABELS_PER_CALL:
        raise InvalidData(
            f"One feedback call must carry at most {MAX_LABELS_PER_CALL} labels. "
            f"Got {len(items)} instead.",
            hint="Split the labels into several calls.",
        )
    out: list[LabelItem] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "label" not in item:
            raise InvalidData(
                f"Label {i} must be an object with 'label' and 'request_id' or 'key'. "
                f"Got {str(item)[:80]} instead."
            )
        rid, key, row = item.get("request_id"), item.get("key"), item.get("row", 0)
        if (rid is None) == (key is None) or not isinstance(rid or key, str):
            raise InvalidData(
                f"Label {i} must name its prediction by a string 'request_id' or 'key' "
                f"(one of them). Got request_id={rid!r}, key={key!r} instead."
            )
        if type(row) is not int or row < 0:
            raise InvalidData(f"Label {i}: 'row' must be an integer >= 0. Got {row!r} instead.")
        label = item["label"]
        scalar = label is None or isinstance(label, (str, int, float, bool))
        numbers = isinstance(label, list) and all(isinstance(v, (int, float)) for v in label)
        if not (scalar or numbers):
            raise InvalidData(
                f"Label {i}: 'label' must be a string, a number or a list of numbers. "
                f"Got {type(label).__name__} instead."
            )
        out.append(LabelItem(index=i, label=label, request_id=rid, key=key, row=row))
    return out


class FeedbackStore:
    """Logged predictions' outputs and their labels.

    Args:
        url: A SQLAlchemy URL; ``FeedbackStore.open(folder)`` uses ``folder/feedback.db``.
    """

    def __init__(
        self, url: str, segments: Path | None = None, keys: KeyProvider | None = None
    ) -> None:
        self.engine = create_engine(url, connect_args={"timeout": 30})
        self.segments = segments
        self.keys = keys
        self._sqlite = url.startswith("sqlite")
        if self._sqlite:

            @event.listens_for(self.engine, "connect")
            def _pragmas(conn: Any, _record: Any) -> None:
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

        _meta.create_all(self.engine)
        self._add_columns()

    def _add_columns(self) -> None:
        """Columns added since the first release, added to a database made before them."""
        from sqlalchemy import inspect

        have = {c["name"] for c in inspect(self.engine).get_columns("predictions")}
        with self.engine.begin() as conn:
            for name, kind in _ADDED_COLUMNS.items():
                if name not in have:
                    conn.exec_driver_sql(f"ALTER TABLE predictions ADD COLUMN {name} {kind}")

    @classmethod
    def open(cls, folder: Path, keys: KeyProvider | None = None) -> FeedbackStore:
        """The store in ``folder/feedback.db`` (created when absent), beside the segments.

        ``keys`` decrypt encrypted segments when outputs are read from them.
        """
        from shipyard.monitoring._segments import SEGMENTS

        folder.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{folder / 'feedback.db'}", segments=folder / SEGMENTS, keys=keys)

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

    def index_predictions(
        self,
        model: str,
        version: str,
        lines: Sequence[Mapping[str, Any]],
        outputs_json: Sequence[bytes] | None = None,
    ) -> None:
        """Record logged requests given as records (request_id, ts, key, rows, outputs)."""
        if not lines:
            return
        if outputs_json is None:
            dumps, opt = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
            outputs_json = [dumps(line["outputs"], option=opt, default=_default) for line in lines]
        params = [
            (
                model,
                line["request_id"],
                version,
                line["ts"],
                line.get("key"),
                line["rows"],
                o.decode(),
            )
            for line, o in zip(lines, outputs_json, strict=True)
        ]
        with self.engine.begin() as conn:
            conn.exec_driver_sql(_INSERT_PREDICTIONS, params)

    def index_segment(
        self,
        model: str,
        version: str,
        segment: str,
        rows: Sequence[tuple[str, float, str | None, int, int]],
    ) -> None:
        """Record the requests of a written segment: (request_id, ts, key, rows, first row).

        Their outputs stay in the segment and are read from it when labels are joined.
        """
        if not rows:
            return
        with self.engine.begin() as conn:
            if self._sqlite:
                params: Any = (model, version, segment, orjson.dumps(rows).decode())
                conn.exec_driver_sql(_INSERT_SEGMENT_ROWS, params)
            else:
                conn.execute(
                    predictions.insert(),
                    [
                        {
                            "model": model,
                            "request_id": rid,
                            "version": version,
                            "ts": ts,
                            "key": key,
                            "rows": n,
                            "outputs": "",
                            "segment": segment,
                            "first_row": first,
                        }
                        for rid, ts, key, n, first in rows
                    ],
                )

    def forget_segments(self, segments: Sequence[tuple[str, str, str]]) -> None:
        """Drop the index rows of deleted segments: (model, version, segment name) each.

        Their labels stay (counted, no longer joinable: the outputs are gone).
        """
        with self.engine.begin() as conn:
            for model, version, segment in segments:
                conn.execute(
                    predictions.delete().where(
                        predictions.c.model == model,
                        predictions.c.version == version,
                        predictions.c.segment == segment,
                    )
                )

    def add_labels(self, model: str, items: Iterable[LabelItem]) -> FeedbackResult:
        """Join labels to logged predictions of ``model``; unknown ones are reported back."""
        result = FeedbackResult()
        now = time.time()
        found_rows: list[tuple[Any, int, Any]] = []
        with self.engine.begin() as conn:
            to_store = []
            for item in items:
                if item.request_id is not None:
                    q = select(predictions).where(
                        predictions.c.model == model,
                        predictions.c.request_id == item.request_id,
                    )
                else:
                    q = (
                        select(predictions)
                        .where(predictions.c.model == model, predictions.c.key == item.key)
                        .order_by(predictions.c.ts.desc())
                        .limit(1)
                    )
                found = conn.execute(q).first()
                if found is None or item.row >= found.rows:
                    named = (
                        {"request_id": item.request_id}
                        if item.request_id is not None
                        else {"key": item.key}
                    )
                    result.unknown.append({"index": item.index, **named, "row": item.row})
                    continue
                to_store.append(
                    {
                        "model": model,
                        "request_id": found.request_id,
                        "row": item.row,
                        "version": found.version,
                        "label": orjson.dumps(item.label).decode(),
                        "ts": now,
                    }
                )
                found_rows.append((found, item.row, item.label))
            if to_store:
                stmt = sqlite_insert(labels)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["model", "request_id", "row"],
                    set_={"label": stmt.excluded.label, "ts": stmt.excluded.ts},
                )
                conn.execute(stmt, to_store)
        outputs = self._outputs(model, [(f, row) for f, row, _ in found_rows])
        for (found, row, label), out in zip(found_rows, outputs, strict=True):
            if out is not None:  # None: its segment was deleted by retention
                result.joined.append(
                    LabelledRow(
                        version=found.version,
                        request_id=found.request_id,
                        row=row,
                        ts=found.ts,
                        outputs=out,
                        label=label,
                    )
                )
        result.accepted = len(found_rows)
        return result

    def _outputs(self, model: str, found: Sequence[tuple[Any, int]]) -> list[dict[str, Any] | None]:
        """Outputs of logged rows: from the index, or read from their segments in bulk.

        ``found`` holds (prediction row of the index, example row) pairs. A row whose
        segment is gone (retention) gets None.
        """
        from shipyard.monitoring import _segments

        out: list[dict[str, Any] | None] = [None] * len(found)
        wanted: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for i, (pred, row) in enumerate(found):
            if pred.outputs:
                out[i] = row_of(orjson.loads(pred.outputs), row)
            elif pred.segment is not None:
                wanted.setdefault((pred.version, pred.segment), []).append(
                    (i, pred.first_row + row)
                )
        for (version, segment), places in wanted.items():
            path = self._segment_path(model, version, segment)
            if path is None or not path.is_file():
                continue
            data = _segments.read_segment(path, self.keys)
            values = _segments.outputs_at(data, [r for _, r in places])
            for (i, _), value in zip(places, values, strict=True):
                out[i] = value
        return out

    def _segment_path(self, model: str, version: str, segment: str) -> Path | None:
        if self.segments is None or "/" in segment or segment.startswith("."):
            return None
        return self.segments / model / version / segment

    def labelled(
        self, model: str, version: str | None = None, since: float | None = None
    ) -> list[LabelledRow]:
        """Logged predictions of ``model`` that have labels, oldest prediction first."""
        q = (
            select(
                predictions.c.version,
                predictions.c.request_id,
                labels.c.row,
                predictions.c.ts,
                predictions.c.outputs,
                predictions.c.segment,
                predictions.c.first_row,
                labels.c.label,
            )
            .join(
                labels,
                (labels.c.model == predictions.c.model)
                & (labels.c.request_id == predictions.c.request_id),
            )
            .where(predictions.c.model == model)
            .order_by(predictions.c.ts, labels.c.row)
        )
        if version is not None:
            q = q.where(predictions.c.version == version)
        if since is not None:
            q = q.where(predictions.c.ts >= since)
        with self.engine.connect() as conn:
            found = list(conn.execute(q))
        outputs = self._outputs(model, [(r, r.row) for r in found])
        return [
            LabelledRow(
                version=r.version,
                request_id=r.request_id,
                row=r.row,
                ts=r.ts,
                outputs=out,
                label=orjson.loads(r.label),
            )
            for r, out in zip(found, outputs, strict=True)
            if out is not None
        ]

    def counts(self, model: str) -> dict[str, dict[str, int]]:
        """Per version: predictions logged and labels joined."""
        from sqlalchemy import func

        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for version, n in conn.execute(
                select(predictions.c.version, func.sum(predictions.c.rows))
                .where(predictions.c.model == model)
                .group_by(predictions.c.version)
            ):
                out.setdefault(version, {"predictions": 0, "labels": 0})["predictions"] = int(n)
            for version, n in conn.execute(
                select(labels.c.version, func.count())
                .where(labels.c.model == model)
                .group_by(labels.c.version)
            ):
                out.setdefault(version, {"predictions": 0, "labels": 0})["labels"] = n
        return out

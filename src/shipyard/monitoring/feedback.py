"""Ground-truth feedback: labels joined to logged predictions, however late they arrive.

The prediction log indexes each logged request here: model, request id, the segment and
row its outputs were written at, its number of rows, and the client's key when it sent
one. A label names a row by ``request_id`` (and ``row``, default 0) or by the client's
``key`` (the V2 request's ``id``) and is stored against the version that made the
prediction. Labels for rows that were never logged are reported back as unknown, never
dropped silently. A later label for the same row replaces the earlier one.

The index is written once per segment by the log's writer, which shares the server's
core, so its row is as slim as it can be: ``logged`` is keyed (model, request id)
WITHOUT ROWID and holds the segment as an integer id; each segment's name, version, time
range and request ids (to forget them by key) are stored once in ``log_segments``. A
request's time is not copied per row: it is read from the segment with its outputs when
labels join (requests given as records to :meth:`FeedbackStore.index_predictions` keep
their time and outputs in the index). A database made before this layout (one
``predictions`` table) is migrated in place when it is opened.

SQLAlchemy Core on a SQLite file (WAL) by default, so a PostgreSQL URL can replace it.

Imports: errors (and SQLAlchemy).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    inspect,
    null,
    select,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError

from shipyard.errors import InvalidData

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from shipyard._utils.crypto import KeyProvider

__all__ = ["FeedbackResult", "FeedbackStore", "LabelledRow", "parse_labels"]

_meta = MetaData()

log_segments = Table(
    "log_segments",
    _meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("version", String(16), nullable=False),
    # the segment file's name; None for requests whose outputs are in the index as JSON
    Column("name", String(128)),
    Column("ts_min", Float, nullable=False),
    Column("ts_max", Float, nullable=False),
    # its requests' ids as a JSON array: forget_segments deletes them by key (an index on
    # logged.segment would cost every logged request a third more)
    Column("request_ids", Text),
    Index("ix_log_segments_name", "model", "version", "name"),
)

logged = Table(
    "logged",
    _meta,
    Column("model", String(64), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("segment", Integer, nullable=False),  # log_segments.id
    Column("first_row", Integer, nullable=False),  # the request's first row in it
    Column("rows", Integer, nullable=False),
    Column("key", String(256)),
    # None (the segment's rows): read from the segment when labels join
    Column("ts", Float),
    Column("outputs", Text),  # the request's outputs (every row) as JSON
    sqlite_with_rowid=False,
)
Index(  # most requests have no key: only those that do are indexed
    "ix_logged_key",
    logged.c.model,
    logged.c.key,
    sqlite_where=logged.c.key.is_not(None),
    postgresql_where=logged.c.key.is_not(None),
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

# The layout before ``logged``: read once, by the migration, then dropped.
_legacy = MetaData()
_predictions = Table(
    "predictions",
    _legacy,
    Column("model", String(64), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("version", String(16), nullable=False),
    Column("ts", Float, nullable=False),
    Column("key", String(256)),
    Column("rows", Integer, nullable=False),
    Column("outputs", Text, nullable=False),  # "" when read from the segment
    Column("segment", String(128)),
    Column("first_row", Integer),
)
_LEGACY_ADDED_COLUMNS = {"segment": "VARCHAR(128)", "first_row": "INTEGER"}

MAX_LABELS_PER_CALL = 100_000

# A segment's requests go to SQLite as one JSON array, unpacked by SQLite itself: cheaper
# than executemany's per-row parameter binding. When every request has one row and no
# key (most segments) the array holds only the request ids, and each one's first row is
# its place in the array; extracting fields from an element costs as much as the insert.
_INSERT_SEGMENT_IDS = (
    "INSERT OR IGNORE INTO logged (model, request_id, segment, first_row, rows) "
    "SELECT ?, value, ?, key, 1 FROM json_each(?)"
)
# by key; a request id logged twice is indexed at its first segment only
_DELETE_SEGMENT_IDS = (
    "DELETE FROM logged WHERE model = ? AND segment = ? "
    "AND request_id IN (SELECT value FROM json_each(?))"
)
_INSERT_SEGMENT_ROWS = (  # [request_id, first_row, rows, key] each
    "INSERT OR IGNORE INTO logged (model, request_id, segment, first_row, rows, key) "
    "SELECT ?, json_extract(value, '$[0]'), ?, json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?)"
)


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
        self._migrate()

    def _migrate(self) -> None:
        """Move a database of the ``predictions`` layout into ``logged``, in one transaction.

        Rows keep their time, key and outputs (JSON or their segment's name and row); each
        distinct segment (and each version's JSON rows) becomes a ``log_segments`` row.
        """
        if "predictions" not in inspect(self.engine).get_table_names():
            return
        try:
            self._migrate_predictions()
        except OperationalError:
            # another process opening the same database migrated it first
            if "predictions" in inspect(self.engine).get_table_names():
                raise

    def _migrate_predictions(self) -> None:
        have = {c["name"] for c in inspect(self.engine).get_columns("predictions")}
        p, s = _predictions, log_segments
        with self.engine.begin() as conn:
            for name, kind in _LEGACY_ADDED_COLUMNS.items():  # a database older still
                if name not in have:
                    conn.exec_driver_sql(f"ALTER TABLE predictions ADD COLUMN {name} {kind}")
            ids = func.json_group_array(p.c.request_id) if self._sqlite else null()
            conn.execute(
                insert(s).from_select(
                    ["model", "version", "name", "ts_min", "ts_max", "request_ids"],
                    select(
                        p.c.model,
                        p.c.version,
                        p.c.segment,
                        func.min(p.c.ts),
                        func.max(p.c.ts),
                        ids,
                    ).group_by(p.c.model, p.c.version, p.c.segment),
                )
            )
            conn.execute(
                insert(logged).from_select(
                    ["model", "request_id", "segment", "first_row", "rows", "key", "ts", "outputs"],
                    select(
                        p.c.model,
                        p.c.request_id,
                        s.c.id,
                        func.coalesce(p.c.first_row, 0),
                        p.c.rows,
                        p.c.key,
                        p.c.ts,
                        func.nullif(p.c.outputs, ""),
                    ).join(
                        s,
                        (s.c.model == p.c.model)
                        & (s.c.version == p.c.version)
                        & s.c.name.is_not_distinct_from(p.c.segment),
                    ),
                )
            )
            _predictions.drop(conn)

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

    @staticmethod
    def _new_segment(
        conn: Connection,
        model: str,
        version: str,
        name: str | None,
        ts: tuple[float, float],
        request_ids: str | None = None,
    ) -> int:
        made = conn.execute(
            log_segments.insert().values(
                model=model,
                version=version,
                name=name,
                ts_min=ts[0],
                ts_max=ts[1],
                request_ids=request_ids,
            )
        )
        key = made.inserted_primary_key
        assert key is not None  # an insert of one row
        return int(key[0])

    def _insert_logged(self) -> Any:
        """An insert into ``logged`` that skips a request id already indexed."""
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            return sqlite_insert(logged).on_conflict_do_nothing()
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(logged).on_conflict_do_nothing()
        return insert(logged)

    def index_predictions(
        self,
        model: str,
        version: str,
        lines: Sequence[Mapping[str, Any]],
        outputs_json: Sequence[bytes] | None = None,
    ) -> None:
        """Record logged requests given as records (request_id, ts, key, rows, outputs).

        Their time and outputs are kept in the index (no segment holds them).
        """
        if not lines:
            return
        if outputs_json is None:
            dumps, opt = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
            outputs_json = [dumps(line["outputs"], option=opt, default=_default) for line in lines]
        times = [line["ts"] for line in lines]
        with self.engine.begin() as conn:
            segment = self._new_segment(conn, model, version, None, (min(times), max(times)))
            conn.execute(
                self._insert_logged(),
                [
                    {
                        "model": model,
                        "request_id": line["request_id"],
                        "segment": segment,
                        "first_row": 0,
                        "rows": line["rows"],
                        "key": line.get("key"),
                        "ts": line["ts"],
                        "outputs": o.decode(),
                    }
                    for line, o in zip(lines, outputs_json, strict=True)
                ],
            )

    def index_segment(
        self,
        model: str,
        version: str,
        segment: str,
        request_ids: Sequence[str],
        counts: Sequence[int],
        keys: Sequence[str | None],
        ts: tuple[float, float],
    ) -> None:
        """Record the requests of a written segment, in its order.

        ``counts`` are each request's rows (the first request starts at row 0), ``keys``
        the clients' keys and ``ts`` the earliest and latest request's time. Their outputs
        and times stay in the segment and are read from it when labels join.
        """
        if not request_ids:
            return
        ids = orjson.dumps(request_ids).decode()
        with self.engine.begin() as conn:
            seg = self._new_segment(conn, model, version, segment, ts, ids)
            n = len(request_ids)
            if self._sqlite and counts.count(1) == n and keys.count(None) == n:
                conn.exec_driver_sql(_INSERT_SEGMENT_IDS, (model, seg, ids))
                return
            firsts = list(itertools.accumulate(counts, initial=0))
            if self._sqlite:
                rows = zip(request_ids, firsts, counts, keys, strict=False)
                params = (model, seg, orjson.dumps(list(rows)).decode())
                conn.exec_driver_sql(_INSERT_SEGMENT_ROWS, params)
                return
            conn.execute(
                self._insert_logged(),
                [
                    {
                        "model": model,
                        "request_id": rid,
                        "segment": seg,
                        "first_row": first,
                        "rows": rows_,
                        "key": key,
                    }
                    for rid, first, rows_, key in zip(
                        request_ids, firsts, counts, keys, strict=False
                    )
                ],
            )

    def forget_segments(self, segments: Sequence[tuple[str, str, str]]) -> None:
        """Drop the index rows of deleted segments: (model, version, segment name) each.

        Their labels stay (counted, no longer joinable: the outputs are gone).
        """
        s = log_segments
        with self.engine.begin() as conn:
            for model, version, name in segments:
                found = conn.execute(
                    select(s.c.id, s.c.request_ids).where(
                        s.c.model == model, s.c.version == version, s.c.name == name
                    )
                )
                for seg, ids in list(found):
                    mine = (logged.c.model == model) & (logged.c.segment == seg)
                    if ids is None:  # migrated without SQLite's JSON functions: a scan
                        conn.execute(logged.delete().where(mine))
                    elif self._sqlite:
                        conn.exec_driver_sql(_DELETE_SEGMENT_IDS, (model, seg, ids))
                    else:
                        listed = orjson.loads(ids)
                        for i in range(0, len(listed), 10_000):
                            part = listed[i : i + 10_000]
                            conn.execute(logged.delete().where(mine, logged.c.request_id.in_(part)))
                    conn.execute(s.delete().where(s.c.id == seg))

    _FOUND = (
        logged.c.request_id,
        logged.c.rows,
        logged.c.first_row,
        logged.c.ts,
        logged.c.outputs,
        log_segments.c.version,
        log_segments.c.name.label("segment"),
        log_segments.c.ts_max,
    )

    def add_labels(self, model: str, items: Iterable[LabelItem]) -> FeedbackResult:
        """Join labels to logged predictions of ``model``; unknown ones are reported back."""
        result = FeedbackResult()
        now = time.time()
        found_rows: list[tuple[Any, int, Any]] = []
        joined = logged.join(log_segments, log_segments.c.id == logged.c.segment)
        with self.engine.begin() as conn:
            to_store = []
            for item in items:
                q = select(*self._FOUND).select_from(joined).where(logged.c.model == model)
                if item.request_id is not None:
                    q = q.where(logged.c.request_id == item.request_id)
                else:
                    latest = func.coalesce(logged.c.ts, log_segments.c.ts_max)
                    q = (
                        q.where(logged.c.key == item.key)
                        .order_by(latest.desc(), logged.c.segment.desc(), logged.c.first_row.desc())
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
        logged_rows = self._logged(model, [(f, row) for f, row, _ in found_rows])
        for (found, row, label), got in zip(found_rows, logged_rows, strict=True):
            if got is not None:  # None: its segment was deleted by retention
                result.joined.append(
                    LabelledRow(
                        version=found.version,
                        request_id=found.request_id,
                        row=row,
                        ts=got[0],
                        outputs=got[1],
                        label=label,
                    )
                )
        result.accepted = len(found_rows)
        return result

    def _logged(
        self, model: str, found: Sequence[tuple[Any, int]]
    ) -> list[tuple[float, dict[str, Any]] | None]:
        """Time and outputs of logged rows: from the index, or read from their segments.

        ``found`` holds (index row, example row) pairs; segments are read once each. A
        row whose segment is gone (retention) gets None.
        """
        from shipyard.monitoring import _segments

        out: list[tuple[float, dict[str, Any]] | None] = [None] * len(found)
        wanted: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for i, (pred, row) in enumerate(found):
            if pred.outputs is not None:
                out[i] = (pred.ts, row_of(orjson.loads(pred.outputs), row))
            elif pred.segment is not None:
                wanted.setdefault((pred.version, pred.segment), []).append(
                    (i, pred.first_row + row)
                )
        for (version, segment), places in wanted.items():
            path = self._segment_path(model, version, segment)
            if path is None or not path.is_file():
                continue
            data = _segments.read_segment(path, self.keys)
            times, values = _segments.outputs_at(data, [r for _, r in places])
            for (i, _), ts, value in zip(places, times, values, strict=True):
                out[i] = (ts, value)
        return out

    def _segment_path(self, model: str, version: str, segment: str) -> Path | None:
        if self.segments is None or "/" in segment or segment.startswith("."):
            return None
        return self.segments / model / version / segment

    def labelled(
        self, model: str, version: str | None = None, since: float | None = None
    ) -> list[LabelledRow]:
        """Logged predictions of ``model`` that have labels, oldest prediction first."""
        s = log_segments
        q = (
            select(*self._FOUND, labels.c.row, labels.c.label)
            .select_from(
                labels.join(
                    logged,
                    (labels.c.model == logged.c.model)
                    & (labels.c.request_id == logged.c.request_id),
                ).join(s, s.c.id == logged.c.segment)
            )
            .where(logged.c.model == model)
        )
        if version is not None:
            q = q.where(s.c.version == version)
        if since is not None:  # a segment's requests: exactly, once read from it
            q = q.where(func.coalesce(logged.c.ts, s.c.ts_max) >= since)
        with self.engine.connect() as conn:
            found = list(conn.execute(q))
        got = self._logged(model, [(r, r.row) for r in found])
        rows = [
            (ts, r.segment or "", r.first_row, r.row, r, out)
            for r, hit in zip(found, got, strict=True)
            if hit is not None
            for ts, out in (hit,)
            if since is None or ts >= since
        ]
        rows.sort(key=lambda t: t[:4])
        return [
            LabelledRow(
                version=r.version,
                request_id=r.request_id,
                row=r.row,
                ts=ts,
                outputs=out,
                label=orjson.loads(r.label),
            )
            for ts, _, _, _, r, out in rows
        ]

    def counts(self, model: str) -> dict[str, dict[str, int]]:
        """Per version: predictions logged and labels joined."""
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for version, n in conn.execute(
                select(log_segments.c.version, func.sum(logged.c.rows))
                .select_from(logged.join(log_segments, log_segments.c.id == logged.c.segment))
                .where(logged.c.model == model)
                .group_by(log_segments.c.version)
            ):
                out.setdefault(version, {"predictions": 0, "labels": 0})["predictions"] = int(n)
            for version, n in conn.execute(
                select(labels.c.version, func.count())
                .where(labels.c.model == model)
                .group_by(labels.c.version)
            ):
                out.setdefault(version, {"predictions": 0, "labels": 0})["labels"] = n
        return out

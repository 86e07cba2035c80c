"""The prediction log: every sampled inference, recorded off the request path.

The request path calls :meth:`PredictionLog.record` once per request: a sampling draw and
an append to a bounded in-memory queue (no copy, no I/O, no lock). A writer thread wakes
every ``flush_interval_s``, turns requests into one row per example, applies the privacy
policy, and writes one JSON-lines segment per (model, version), atomically: staged,
fsynced and renamed, so a process killed with SIGKILL loses at most what was still in
memory and never leaves a torn segment. The rows' outputs are then indexed in a small
SQL database (:class:`~shipyard.monitoring.feedback.FeedbackStore`) so ground-truth labels
can be joined to them however late they arrive.

When the queue is full, records are dropped, counted (``dropped``, and the
``shipyard_predlog_dropped_total`` metric) and logged once per interval: serving never
waits for the disk, and nothing is dropped silently.

A segment holds one JSON line per request, its tensors whole (encoded by orjson straight
from numpy, so the writer stays cheap)::

    {"request_id": "...", "model": "m", "version": "3", "ts": 1795536000.1,
     "latency_ms": 1.2, "key": null, "rows": 2, "inputs": {"x": [[...], [...]]},
     "outputs": {"y": [[...], [...]]}}

:func:`iter_rows` reads them back as one record per example (with its ``row`` index).

Imports: config, errors, _utils (numpy and orjson).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from shipyard._utils import faults
from shipyard._utils.fs import fsync_dir

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard.config import MonitoringSettings
    from shipyard.monitoring.feedback import FeedbackStore

__all__ = ["PredictionLog", "iter_requests", "iter_rows", "row_of", "segment_paths"]

logger = logging.getLogger(__name__)

Arrays = Mapping[str, "npt.NDArray[Any]"]

SEGMENTS = "segments"
# The writer shares the GIL with the serving loop: it releases it every this many requests
# (a few hundred microseconds of work), so a request never waits long behind a flush.
_YIELD_EVERY = 32
SUFFIX = ".jsonl"


@dataclass(slots=True)
class _Request:
    request_id: str
    model: str
    version: str
    ts: float
    latency_ms: float
    key: str | None
    inputs: Arrays
    outputs: Arrays


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def _summary(values: npt.NDArray[Any]) -> dict[str, Any]:
    """Count, NaN count, mean, min and max of one example's values (numbers only)."""
    flat = np.asarray(values).ravel()
    if flat.dtype.kind not in "biuf" or flat.size == 0:
        return {"count": int(flat.size)}
    as_float = flat.astype(np.float64)
    finite = as_float[np.isfinite(as_float)]
    out: dict[str, Any] = {"count": int(flat.size), "nan": int(np.isnan(as_float).sum())}
    if finite.size:
        out.update(mean=float(finite.mean()), min=float(finite.min()), max=float(finite.max()))
    return out


class _Privacy:
    """What of each field is written: everything, a summary, a salted hash, or nothing."""

    def __init__(self, settings: MonitoringSettings) -> None:
        self.inputs = settings.inputs
        self.redact = dict(settings.redact)
        self.salt = settings.hash_salt.encode()

    def _hash(self, value: Any) -> str:
        data = orjson.dumps(value, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)
        return hashlib.sha256(self.salt + data).hexdigest()

    def fields(self, tensors: Arrays, n: int, *, inputs: bool) -> Arrays | dict[str, Any]:
        """What is written of each tensor: itself, per-example summaries or hashes, or nothing."""
        if not self.redact and (not inputs or self.inputs == "full"):
            for arr in tensors.values():
                if arr.dtype.kind == "O" or not arr.flags.c_contiguous:
                    break
            else:
                return tensors  # orjson writes the arrays themselves
        out: dict[str, Any] = {}
        for name, arr in tensors.items():
            rule = self.redact.get(name)
            if rule == "drop" or (inputs and self.inputs == "none" and rule is None):
                continue
            if rule == "summary" or (inputs and self.inputs == "summary" and rule is None):
                out[name] = [_summary(arr[i]) for i in range(n)] if arr.ndim else [_summary(arr)]
            elif rule == "hash":
                values = arr.tolist() if arr.ndim else [arr.tolist()]
                out[name] = [self._hash(v) for v in values]
            elif arr.dtype.kind == "O" or not arr.flags.c_contiguous:
                out[name] = arr.tolist()
            else:
                out[name] = arr
        return out


class PredictionLog:
    """Records inferences to segment files and indexes their outputs for feedback.

    Args:
        root: The monitoring folder (segments go to ``root/segments``).
        settings: Sampling, privacy, queue, flush and retention settings.
        store: Where row outputs are indexed for the feedback join (None: not indexed).
        on_drop: Called with the number of records dropped at each flush that dropped some
            (the server counts them in a Prometheus counter).
        on_lines: Called with (model, version, request lines) after each segment is
            written (live quality and drift subscribe here).
    """

    def __init__(
        self,
        root: Path,
        settings: MonitoringSettings,
        *,
        store: FeedbackStore | None = None,
        on_drop: Callable[[int], None] | None = None,
        on_lines: Callable[[str, str, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.root = root
        self.settings = settings
        self.store = store
        self.on_drop = on_drop
        self.on_lines = on_lines
        self.segments_dir = root / SEGMENTS
        self.dropped = 0
        self.written_rows = 0
        self._queue: deque[_Request] = deque()
        self._limit = settings.queue_size
        self._high_water = max(1, settings.queue_size // 2)
        self._rate = settings.sample_rate
        self._privacy = _Privacy(settings)
        self._seq = 0
        self._dropped_reported = 0
        self._wake = threading.Event()
        self._stop = False
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_retention = 0.0

    # ---- the request path ---------------------------------------------------------------

    def record(
        self,
        request_id: str,
        model: str,
        version: str,
        inputs: Arrays,
        outputs: Arrays,
        latency_s: float,
        key: str | None = None,
    ) -> None:
        """Queue one request's inputs and outputs (never blocks, never raises)."""
        if self._rate < 1.0 and random.random() >= self._rate:
            return
        queue = self._queue
        if len(queue) >= self._limit:
            self.dropped += 1
            return
        queue.append(
            _Request(
                request_id, model, version, time.time(), latency_s * 1000, key, inputs, outputs
            )
        )
        if len(queue) == self._high_water:  # half full: write now, before it overflows
            self._wake.set()

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> PredictionLog:
        """Start the writer thread (idempotent)."""
        if self._thread is None:
            self.segments_dir.mkdir(parents=True, exist_ok=True)
            self._stop = False
            self._thread = threading.Thread(
                target=self._writer, name="shipyard-predlog", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Flush what is queued and stop the writer."""
        thread = self._thread
        if thread is not None:
            self._stop = True
            self._wake.set()
            thread.join(timeout=30)
            self._thread = None
        self.flush()

    def _writer(self) -> None:
        interval = self.settings.flush_interval_s
        while not self._stop:
            self._wake.wait(interval)
            self._wake.clear()
            try:
                self.flush()
                self._retention()
            except Exception:  # never let the writer die: log it and try again next time
                logger.exception("The prediction log could not write a segment")

    # ---- writing ------------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything queued now (one segment per model version); return rows written."""
        with self._flush_lock:
            queue = self._queue
            taken: list[_Request] = []
            while queue:
                taken.append(queue.popleft())
            dropped = self.dropped - self._dropped_reported
            if dropped:
                self._dropped_reported = self.dropped
                logger.warning(
                    "The prediction log dropped %d records: its queue (%d) was full. "
                    "Raise SHIPYARD_MONITORING__QUEUE_SIZE or lower the sample rate.",
                    dropped,
                    self._limit,
                )
                if self.on_drop is not None:
                    self.on_drop(dropped)
            if not taken:
                return 0
            by_version: dict[tuple[str, str], tuple[list[dict[str, Any]], list[bytes]]] = {}
            for done, req in enumerate(taken, 1):
                if done % _YIELD_EVERY == 0:
                    time.sleep(0)  # hand the GIL to the serving thread between chunks
                line, outputs = self._line(req)
                group = by_version.setdefault((req.model, req.version), ([], []))
                group[0].append(line)
                group[1].append(outputs)
            total = 0
            for (model, version), (lines, encoded) in by_version.items():
                self._write_segment(model, version, lines)
                if self.store is not None:
                    self.store.index_predictions(model, version, lines, encoded)
                if self.on_lines is not None:
                    for line, outputs in zip(lines, encoded, strict=True):
                        line["outputs"] = orjson.loads(outputs)
                    self.on_lines(model, version, lines)
                total += sum(line["rows"] for line in lines)
            self.written_rows += total
            return total

    def _line(self, req: _Request) -> tuple[dict[str, Any], bytes]:
        """The request's JSON line, its outputs encoded once (for the file and the index)."""
        n = _rows_in(req.outputs) or _rows_in(req.inputs) or 1
        outputs = orjson.dumps(
            self._privacy.fields(req.outputs, n, inputs=False),
            default=_json_default,
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        line = {
            "request_id": req.request_id,
            "model": req.model,
            "version": req.version,
            "ts": req.ts,
            "latency_ms": req.latency_ms,
            "key": req.key,
            "rows": n,
            "inputs": self._privacy.fields(req.inputs, n, inputs=True),
            "outputs": orjson.Fragment(outputs),
        }
        return line, outputs

    def _write_segment(self, model: str, version: str, lines: list[dict[str, Any]]) -> Path:
        folder = self.segments_dir / model / version
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{SUFFIX}"
        final = folder / name
        staged = folder / f".{name}.tmp"
        dumps, opt = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
        data = b"\n".join(dumps(line, default=_json_default, option=opt) for line in lines)
        with open(staged, "wb") as fh:
            fh.write(data + b"\n")
            fh.flush()
            faults.reach("predlog.after-staged-write")
            os.fsync(fh.fileno())
        os.replace(staged, final)
        fsync_dir(folder)
        faults.reach("predlog.after-segment-rename")
        return final

    # ---- retention ----------------------------------------------------------------------

    def _retention(self, *, force: bool = False) -> int:
        """Delete segments past the age or total-size limit; return how many."""
        now = time.time()
        if not force and now - self._last_retention < 60:
            return 0
        self._last_retention = now
        segments = sorted(
            (int(p.name.split("-", 1)[0]), p.stat().st_size, p) for p in segment_paths(self.root)
        )
        cutoff_ns = int((now - self.settings.max_age_days * 86400) * 1e9)
        total = sum(size for _, size, _ in segments)
        removed = 0
        for stamp, size, path in segments:
            if stamp >= cutoff_ns and total <= self.settings.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        # stale staged files of a killed writer
        for staged in self.segments_dir.glob("*/*/.*.tmp"):
            if now - staged.stat().st_mtime > 60:
                staged.unlink(missing_ok=True)
        return removed


def _rows_in(tensors: Arrays) -> int:
    for arr in tensors.values():
        if arr.ndim:
            return int(arr.shape[0])
    return 0


def segment_paths(root: Path, model: str | None = None, version: str | None = None) -> list[Path]:
    """Complete segment files under ``root`` (staged ones excluded), oldest first."""
    base = root / SEGMENTS
    if model is not None:
        base = base / model
        if version is not None:
            base = base / version
    pattern = (
        "*" + SUFFIX if version is not None else ("*/*" + SUFFIX if model else "*/*/*" + SUFFIX)
    )
    return sorted(
        (p for p in base.glob(pattern) if not p.name.startswith(".")), key=lambda p: p.name
    )


def iter_requests(
    root: Path, model: str | None = None, version: str | None = None
) -> Iterator[dict[str, Any]]:
    """Every logged request (one JSON line each), oldest segment first."""
    for path in segment_paths(root, model, version):
        with open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    yield orjson.loads(line)


def row_of(fields: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Example ``i`` of a request's logged tensors."""
    return {name: values[i] for name, values in fields.items()}


def iter_rows(
    root: Path, model: str | None = None, version: str | None = None
) -> Iterator[dict[str, Any]]:
    """Every logged example, oldest first: the request's fields with this row's values."""
    for req in iter_requests(root, model, version):
        inputs, outputs = req.pop("inputs"), req.pop("outputs")
        n = req.pop("rows")
        for i in range(n):
            yield {
                **req,
                "row": i,
                "inputs": row_of(inputs, i),
                "outputs": row_of(outputs, i),
            }

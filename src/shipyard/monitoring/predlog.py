"""The prediction log: every sampled inference, recorded off the request path.

The request path calls :meth:`PredictionLog.record` once per request: a sampling draw and
an append to a bounded in-memory queue (no copy, no I/O, no lock). A writer thread wakes
every ``DRAIN_S`` (or when the queue is half full), turns the queued requests into one row
per example, applies the privacy policy and appends them to the staged segment of their
(model, version); every ``flush_interval_s`` it commits the staged segments atomically:
fsynced and renamed, so a process killed with SIGKILL loses at most one interval and never
leaves a torn segment. Draining often and committing seldom keeps both costs low: a
request's tensors are released within a tenth of a second, so the serving thread's
allocations keep reusing memory that is still in cache (held for a whole second, they
made each logged request of S cost ~2 µs more on the serving thread), while the fixed
cost of a segment (its fsync, rename and index transaction) is paid once per interval.
(Draining every 20 ms instead cost S ~0.7 µs more a request in the writer's fixed costs
per drain; every 50 and 100 ms measured alike for M.) The requests are
then indexed (segment and first row) in a small SQL database
(:class:`~shipyard.monitoring.feedback.FeedbackStore`) so ground-truth labels can be joined
to them however late they arrive.

When the queue is full, records are dropped, counted (``dropped``, and the
``shipyard_predlog_dropped_total`` metric) and logged once per interval: serving never
waits for the disk, and nothing is dropped silently.

A segment is an Arrow IPC file with one row per example (request id, row index, time,
latency, the client's key, then the inputs and outputs as columns); the format and why it
was chosen are described in :mod:`shipyard.monitoring._segments`. Segments written as JSON
lines by earlier versions are still read. :func:`iter_rows` reads segments back as one
record per example (with its ``row`` index), :func:`iter_requests` one per request, and
:func:`read_window` the latest examples' numeric tensors as arrays (for drift).

Imports: config, errors, _utils (numpy, orjson, pyarrow).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from shipyard._utils import faults
from shipyard._utils.crypto import encrypt_bytes
from shipyard._utils.fs import fsync_dir
from shipyard.monitoring import _segments
from shipyard.monitoring._segments import SEGMENTS, Entry, Privacy

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard._utils.crypto import KeyProvider
    from shipyard.config import MonitoringSettings, Settings
    from shipyard.monitoring.feedback import FeedbackStore

__all__ = [
    "PredictionLog",
    "iter_requests",
    "iter_rows",
    "keys_for",
    "read_window",
    "row_of",
    "segment_paths",
]

logger = logging.getLogger(__name__)

Arrays = Mapping[str, "npt.NDArray[Any]"]

SUFFIX = ".arrow"
_LEGACY_SUFFIX = ".jsonl"


class _Segment:
    """One segment file being written: staged, then fsynced and renamed into place.

    Plain segments are written by Arrow straight to the staged file (the GIL released);
    with ``keys`` the file is built in memory and written as one AES-256-GCM envelope
    whose associated data is the segment's name (a segment renamed does not decrypt).
    """

    def __init__(
        self, folder: Path, name: str, schema: pa.Schema, keys: KeyProvider | None = None
    ) -> None:
        self.folder = folder
        self.final = folder / name
        self.staged = folder / f".{name}.tmp"
        self.schema = schema
        self.rows = 0
        self._keys = keys
        self._file: Any = (
            pa.BufferOutputStream() if keys is not None else pa.OSFile(str(self.staged), "wb")
        )
        self._writer = pa.ipc.new_file(self._file, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def commit(self) -> Path:
        self._writer.close()
        if self._keys is not None:
            plain = self._file.getvalue()
            sealed = encrypt_bytes(plain.to_pybytes(), self._keys, aad=self.final.name.encode())
            with open(self.staged, "wb") as fh:
                fh.write(sealed)
        else:
            self._file.close()
        faults.reach("predlog.after-staged-write")
        fd = os.open(self.staged, os.O_RDONLY)
        try:
            os.fsync(fd)
            if hasattr(os, "posix_fadvise"):
                # written once, read rarely: hand its pages back to the kernel now, so the
                # next segment's writes reuse them instead of taking fresh pages (on a VM
                # a fresh page cost ~12x the copy: 2.2 against 0.18 ms per MB here)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        os.replace(self.staged, self.final)
        fsync_dir(self.folder)
        faults.reach("predlog.after-segment-rename")
        return self.final

    def abandon(self) -> None:
        try:
            self._writer.close()
        except Exception:  # the write that failed may have left the writer unusable
            logger.debug("closing an abandoned segment failed", exc_info=True)
        self._file.close()
        self.staged.unlink(missing_ok=True)


DRAIN_S = 0.1
"""How often the writer takes what is queued (it commits every ``flush_interval_s``)."""


class _Index:
    """A segment's requests, in its order, as the feedback index takes them."""

    __slots__ = ("counts", "keys", "request_ids", "ts_max", "ts_min")

    def __init__(self) -> None:
        self.request_ids: list[str] = []
        self.counts: list[int] = []
        self.keys: list[str | None] = []
        self.ts_min = float("inf")
        self.ts_max = float("-inf")

    def add(self, part: _segments.Encoded) -> None:
        self.request_ids += part.request_ids
        self.counts += part.counts
        self.keys += part.keys
        self.ts_min = min(self.ts_min, min(part.ts))
        self.ts_max = max(self.ts_max, max(part.ts))


class PredictionLog:
    """Records inferences to segment files and indexes their outputs for feedback.

    Args:
        root: The monitoring folder (segments go to ``root/segments``).
        settings: Sampling, privacy, queue, flush and retention settings.
        store: Where row outputs are indexed for the feedback join (None: not indexed).
        keys: Encrypt segments with these keys (None: plain); see :func:`keys_for`.
        on_drop: Called with the number of records dropped at each flush that dropped some
            (the server counts them in a Prometheus counter).
    """

    def __init__(
        self,
        root: Path,
        settings: MonitoringSettings,
        *,
        store: FeedbackStore | None = None,
        on_drop: Callable[[int], None] | None = None,
        keys: KeyProvider | None = None,
    ) -> None:
        self.root = root
        self.keys = keys
        self.settings = settings
        self.store = store
        self.on_drop = on_drop
        self.segments_dir = root / SEGMENTS
        self.dropped = 0
        self.written_rows = 0
        self._queue: deque[Entry] = deque()
        self._limit = settings.queue_size
        self._high_water = max(1, settings.queue_size // 2)
        self._rate = settings.sample_rate
        self._privacy = Privacy(settings.inputs, settings.redact, settings.hash_salt)
        self._seq = 0
        self._dropped_reported = 0
        self._wake = threading.Event()
        self._stop = False
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_retention = 0.0
        self._scratch: dict[str, Any] = {}  # the writer's reusable concatenation buffers
        # staged, not yet committed: (model, version) -> its open segment and their index
        self._staged: dict[tuple[str, str], tuple[_Segment, _Index]] = {}

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
            Entry(
                model,
                version,
                time.time(),
                [request_id],
                [key],
                [latency_s * 1000],
                None,
                inputs,
                outputs,
            )
        )
        if len(queue) == self._high_water:  # half full: write now, before it overflows
            self._wake.set()

    def record_batch(
        self,
        model: str,
        version: str,
        request_ids: list[str],
        keys: list[str | None],
        latency_ms: list[float],
        counts: list[int],
        inputs: Arrays,
        outputs: Arrays,
    ) -> None:
        """Queue the requests of one batch: their inputs and outputs stacked, as run.

        ``counts`` are the rows of each request, in the stacked tensors' order. One queue
        entry for the batch, however many requests it holds (sampled as one).
        """
        if self._rate < 1.0 and random.random() >= self._rate:
            return
        queue = self._queue
        if len(queue) >= self._limit:
            self.dropped += len(request_ids)
            return
        queue.append(
            Entry(
                model, version, time.time(), request_ids, keys, latency_ms, counts, inputs, outputs
            )
        )
        if len(queue) == self._high_water:
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
        drain = min(interval, DRAIN_S)
        due = time.monotonic() + interval
        while not self._stop:
            self._wake.wait(drain)
            self._wake.clear()
            now = time.monotonic()
            commit = now >= due
            try:
                self._drain(commit=commit)
                if commit:
                    due = now + interval
                    self._retention()
            except Exception:  # never let the writer die: log it and try again next time
                logger.exception("The prediction log could not write a segment")

    # ---- writing ------------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything queued now and commit it (a segment per model version).

        Returns:
            The rows written by this call.
        """
        return self._drain(commit=True)

    def _drain(self, *, commit: bool) -> int:
        """Append what is queued to the staged segments; commit them when asked."""
        with self._flush_lock:
            queue = self._queue
            taken: list[Entry] = []
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
            total = 0
            if taken:
                by_version: dict[tuple[str, str], list[Entry]] = {}
                for req in taken:
                    by_version.setdefault((req.model, req.version), []).append(req)
                for (model, version), requests in by_version.items():
                    total += self._write_version(model, version, requests)
                self.written_rows += total
            if commit:
                staged, self._staged = self._staged, {}
                for (model, version), (segment, index) in staged.items():
                    try:
                        self._commit(model, version, segment, index)
                    except BaseException:
                        segment.abandon()
                        raise
            return total

    def _write_version(self, model: str, version: str, entries: list[Entry]) -> int:
        """Append one model version's requests to its staged segment (one per schema)."""
        key = (model, version)
        written = 0
        for part in _segments.encode(model, version, entries, self._privacy, scratch=self._scratch):
            staged = self._staged.get(key)
            if staged is not None and part.batch.schema != staged[0].schema:
                del self._staged[key]
                self._commit(model, version, *staged)  # a new schema starts a new segment
                staged = None
            if staged is None:
                staged = self._staged[key] = (
                    self._open_segment(model, version, part.batch.schema),
                    _Index(),
                )
            segment, index = staged
            try:
                segment.write(part.batch)  # before the next chunk reuses the scratch buffers
            except BaseException:
                del self._staged[key]
                segment.abandon()
                raise
            if self.store is not None:
                index.add(part)
            segment.rows += part.batch.num_rows
            written += part.batch.num_rows
            time.sleep(0)  # hand the GIL to the serving thread between chunks
        return written

    def _commit(self, model: str, version: str, segment: _Segment, index: _Index) -> None:
        path = segment.commit()
        if self.store is not None:
            # indexed once the segment is in place: a label can only find a written row
            self.store.index_segment(
                model,
                version,
                path.name,
                index.request_ids,
                index.counts,
                index.keys,
                (index.ts_min, index.ts_max),
            )

    def _open_segment(self, model: str, version: str, schema: pa.Schema) -> _Segment:
        folder = self.segments_dir / model / version
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{SUFFIX}"
        return _Segment(folder, name, schema, self.keys)

    # ---- retention ----------------------------------------------------------------------

    def _retention(self, *, force: bool = False) -> int:
        """Keep segments within the age and size limits; return how many were deleted.

        Past ``max_bytes``, the oldest segments first lose their inputs (rewritten with
        their outputs only, a few bytes a row), so labels that arrive late still join;
        only if that is not enough are the oldest deleted. Past ``max_age_days`` a
        segment is deleted. Deleted segments leave the feedback index too.
        """
        now = time.time()
        if not force and now - self._last_retention < 60:
            return 0
        self._last_retention = now
        segments = sorted(
            (int(p.name.split("-", 1)[0]), p.stat().st_size, p) for p in segment_paths(self.root)
        )
        cutoff_ns = int((now - self.settings.max_age_days * 86400) * 1e9)
        limit = self.settings.max_bytes
        total = sum(size for _, size, _ in segments)
        kept: list[tuple[int, int, Path]] = []
        for i, (stamp, size, path) in enumerate(segments):
            if stamp >= cutoff_ns and total <= limit:
                kept.extend(segments[i:])
                break
            if stamp >= cutoff_ns and path.suffix == SUFFIX:
                smaller = _segments.without_inputs(path, self.keys)
                if smaller is not None:
                    total -= size - smaller
                    kept.append((stamp, smaller, path))
                    continue
            kept.append((stamp, size, path))
        gone: list[Path] = []
        for stamp, size, path in kept:
            if stamp >= cutoff_ns and total <= limit:
                break
            path.unlink(missing_ok=True)
            total -= size
            gone.append(path)
        if gone and self.store is not None:
            self.store.forget_segments(
                [(p.parent.parent.name, p.parent.name, p.name) for p in gone]
            )
        # stale staged files of a killed writer (".<name>.tmp") or compaction (".tmp-*")
        for staged in self.segments_dir.glob("*/*/.*"):
            if now - staged.stat().st_mtime > 60:
                staged.unlink(missing_ok=True)
        return len(gone)


def segment_paths(root: Path, model: str | None = None, version: str | None = None) -> list[Path]:
    """Complete segment files under ``root`` (staged ones excluded), oldest first."""
    base = root / SEGMENTS
    depth = 0 if version is not None else (1 if model is not None else 2)
    if model is not None:
        base = base / model
        if version is not None:
            base = base / version
    prefix = "*/" * depth
    found = [
        p
        for suffix in (SUFFIX, _LEGACY_SUFFIX)
        for p in base.glob(prefix + "*" + suffix)
        if not p.name.startswith(".")
    ]
    return sorted(found, key=lambda p: p.name)


def _legacy_requests(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def iter_requests(
    root: Path,
    model: str | None = None,
    version: str | None = None,
    *,
    keys: KeyProvider | None = None,
) -> Iterator[dict[str, Any]]:
    """Every logged request, oldest segment first: its fields, ``rows`` examples each.

    ``inputs`` and ``outputs`` map each logged field to a list of one value per example.
    """
    for path in segment_paths(root, model, version):
        if path.suffix == _LEGACY_SUFFIX:
            yield from _legacy_requests(path)
        else:
            yield from _segments.decode_requests(_segments.read_segment(path, keys))


def row_of(fields: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Example ``i`` of a request's logged tensors."""
    return {name: values[i] for name, values in fields.items()}


def iter_rows(
    root: Path,
    model: str | None = None,
    version: str | None = None,
    *,
    keys: KeyProvider | None = None,
) -> Iterator[dict[str, Any]]:
    """Every logged example, oldest first: the request's fields with this row's values."""
    for path in segment_paths(root, model, version):
        if path.suffix != _LEGACY_SUFFIX:
            yield from _segments.decode_rows(_segments.read_segment(path, keys))
            continue
        for req in _legacy_requests(path):
            inputs, outputs = req.pop("inputs"), req.pop("outputs")
            n = req.pop("rows")
            for i in range(n):
                yield {
                    **req,
                    "rows": n,
                    "row": i,
                    "inputs": row_of(inputs, i),
                    "outputs": row_of(outputs, i),
                }


def read_window(
    root: Path,
    model: str,
    version: str,
    rows: int,
    *,
    part: str = "inputs",
    keys: KeyProvider | None = None,
) -> dict[str, npt.NDArray[Any]]:
    """The latest ``rows`` logged examples' numeric fields of ``part``, as arrays.

    Newest segments are read first and only as many as needed; each field comes back as
    one array of shape (examples, *example shape), oldest example first. Fields logged as
    summaries, hashes or BYTES are left out; so are JSON-lines segments of old versions.
    """
    parts: dict[str, list[npt.NDArray[Any]]] = {}
    have = 0
    for path in reversed(segment_paths(root, model, version)):
        if have >= rows:
            break
        if path.suffix == _LEGACY_SUFFIX:
            continue
        window = _segments.numeric_window(_segments.read_segment(path, keys), part)
        if not window:
            continue
        for name, values in window.items():
            parts.setdefault(name, []).insert(0, values)
        have += len(next(iter(window.values())))
    out: dict[str, npt.NDArray[Any]] = {}
    for name, chunks in parts.items():
        shapes = {c.shape[1:] for c in chunks}
        if len(shapes) == 1:  # a field whose example shape changed cannot be stacked
            out[name] = np.concatenate(chunks)[-rows:]
    return out


def keys_for(settings: Settings) -> KeyProvider | None:
    """The keys of encrypted segments: the registry's when ``monitoring.encrypt`` is on.

    None when it is off.

    Raises:
        EncryptionKeyMissing: encryption is on and no key is configured.
    """
    if not settings.monitoring.encrypt:
        return None
    from shipyard._utils.crypto import key_provider_from
    from shipyard.errors import EncryptionKeyMissing

    reg = settings.registry
    keys = key_provider_from(reg.encryption_key_env, reg.encryption_key_file)
    if keys is None:
        raise EncryptionKeyMissing(
            "Encrypted prediction-log segments need a key. None is configured.",
            hint=f"Set ${reg.encryption_key_env} (base64 of 32 random bytes) or "
            "SHIPYARD_REGISTRY__ENCRYPTION_KEY_FILE, or SHIPYARD_MONITORING__ENCRYPT=false.",
        )
    return keys

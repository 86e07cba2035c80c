"""Micro-benchmark: the prediction log's writer, CPU µs per logged request.

The server runs on one core, so every µs its writer thread spends is a µs taken from
serving. This builds a :class:`PredictionLog` with a feedback store in a temporary folder
(as ``server/runner.py`` does), queues synthetic requests the way the dataplane does
(``record`` per unbatched request, ``record_batch`` per batch the batcher ran), then calls
``flush()`` in this thread and divides its CPU time (``time.thread_time``, which stays
meaningful on a busy machine) by the requests flushed. The flush is split into:

- ``encode_write``: Arrow encoding and writing the staged segment (the rest of the flush),
- ``commit``: closing the segment, fsyncing it, renaming it and fsyncing its folder,
- ``index``: the feedback index's insert of the segment's requests.

Models, as in ``benchmarks/serve/run.py``: S (one FP32 row of 64 features per request;
outputs ``label`` int64 [1] and ``probabilities`` float32 [1, 10]) and M (FP32
[1, 3, 32, 32] = 12 KB per request; output ``logits`` float32 [1, 10]).

Run:  .venv/bin/python benchmarks/micro/bench_predlog_writer.py [--quick] [--no-write]
Writes benchmarks/results/micro/predlog-writer-<date>-<sha>.json (sha, host, versions,
parameters, results).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _provenance import ROOT, host_info, versions  # noqa: E402

from shipyard.config import MonitoringSettings  # noqa: E402
from shipyard.monitoring import predlog  # noqa: E402
from shipyard.monitoring.feedback import FeedbackStore  # noqa: E402
from shipyard.monitoring.predlog import PredictionLog  # noqa: E402

MONITORED = ("src/shipyard/monitoring",)


def _git_sha() -> str:
    """HEAD's short sha, "-dirty" when the monitoring package has uncommitted changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *MONITORED],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return (sha or "unknown") + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def _model(key: str, rows: int, rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inputs and outputs of ``rows`` stacked requests of model S or M."""
    if key == "S":
        x = rng.random((rows, 64), dtype=np.float32)
        p = rng.random((rows, 10), dtype=np.float32)
        return {"X": x}, {"label": p.argmax(axis=1).astype(np.int64), "probabilities": p}
    x = rng.random((rows, 3, 32, 32), dtype=np.float32)
    return {"input": x}, {"logits": rng.random((rows, 10), dtype=np.float32)}


class _Timers:
    """CPU time of the commit and index steps, by wrapping them."""

    def __init__(self, log: PredictionLog) -> None:
        self.commit = 0.0
        self.index = 0.0
        segment_commit = predlog._Segment.commit
        store = log.store
        assert store is not None
        index_segment = store.index_segment

        def commit(seg: Any) -> Any:
            t0 = time.thread_time()
            try:
                return segment_commit(seg)
            finally:
                self.commit += time.thread_time() - t0

        def index(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return index_segment(*args, **kwargs)
            finally:
                self.index += time.thread_time() - t0

        self._restore: Callable[[], None] = lambda: setattr(
            predlog._Segment, "commit", segment_commit
        )
        predlog._Segment.commit = commit  # type: ignore[method-assign]
        store.index_segment = index  # type: ignore[method-assign]

    def close(self) -> None:
        self._restore()


def run_case(key: str, batch: int, requests: int, flushes: int, seed: int = 0) -> dict[str, Any]:
    """Flush ``flushes`` times ``requests`` requests of model ``key`` in batches of ``batch``."""
    rng = np.random.default_rng(seed)
    settings = MonitoringSettings(queue_size=10 * requests + 1, flush_interval_s=3600)
    prefix = os.urandom(4).hex()
    counter = 0
    per_flush: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="shipyard-predlog-bench-") as tmp:
        root = Path(tmp)
        store = FeedbackStore.open(root)
        log = PredictionLog(root, settings, store=store)
        log.segments_dir.mkdir(parents=True, exist_ok=True)
        timers = _Timers(log)
        try:
            for f in range(flushes + 1):  # the first flush warms up (not counted)
                # the request path's arrays, made before the clock starts: each request
                # (or batch) has its own, as decoded bodies and runtime outputs are
                entries = []
                for _ in range(requests // batch):
                    inputs, outputs = _model(key, batch, rng)
                    ids = [f"{prefix}{counter + i:08x}" for i in range(batch)]
                    counter += batch
                    entries.append((ids, inputs, outputs))
                for ids, inputs, outputs in entries:
                    if batch == 1:
                        log.record(ids[0], key.lower(), "1", inputs, outputs, 0.0012)
                    else:
                        log.record_batch(
                            key.lower(),
                            "1",
                            ids,
                            [None] * batch,
                            [1.2] * batch,
                            [1] * batch,
                            inputs,
                            outputs,
                        )
                del entries
                timers.commit = timers.index = 0.0
                t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
                written = log.flush()
                cpu = time.thread_time() - t0
                proc = time.process_time() - p0
                wall = time.perf_counter() - w0
                assert written == requests, (written, requests)
                if f == 0:
                    continue
                scale = 1e6 / requests
                per_flush.append(
                    {
                        "total": cpu * scale,
                        "encode_write": (cpu - timers.commit - timers.index) * scale,
                        "commit": timers.commit * scale,
                        "index": timers.index * scale,
                        "process": proc * scale,
                        "wall": wall * scale,
                    }
                )
        finally:
            timers.close()
            store.close()
    summary = {
        part: {
            "median_us": statistics.median(r[part] for r in per_flush),
            "min_us": min(r[part] for r in per_flush),
        }
        for part in per_flush[0]
    }
    return {
        "model": key,
        "batch": batch,
        "call": "record" if batch == 1 else "record_batch",
        "requests_per_flush": requests,
        "flushes": flushes,
        "us_per_request": summary,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer flushes (smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--models", default="S,M")
    parser.add_argument("--batches", default="1,8,64", help="requests per logged entry")
    parser.add_argument("--requests", type=int, default=4096, help="requests per flush")
    parser.add_argument("--flushes", type=int, default=7)
    args = parser.parse_args()
    flushes = 2 if args.quick else args.flushes
    cases = []
    for key in [m.strip().upper() for m in args.models.split(",")]:
        for batch in [int(b) for b in args.batches.split(",")]:
            case = run_case(key, batch, args.requests, flushes)
            cases.append(case)
            us = case["us_per_request"]
            print(
                f"{key} batch {batch:3d}: writer {us['total']['median_us']:6.2f} µs/request "
                f"(encode+write {us['encode_write']['median_us']:5.2f}, "
                f"commit {us['commit']['median_us']:5.2f}, "
                f"index {us['index']['median_us']:5.2f}; "
                f"min total {us['total']['min_us']:.2f})",
                flush=True,
            )
    sha = _git_sha()
    result = {
        "benchmark": "bench_predlog_writer",
        "git_sha": sha,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": host_info(),
        "versions": versions("pyarrow", "sqlalchemy", "orjson"),
        "parameters": {
            "requests_per_flush": args.requests,
            "flushes": flushes,
            "batches": args.batches,
            "statistic": "median and min over flushes (a warm-up flush first), per request",
            "clock": "time.thread_time of the flushing thread",
        },
        "results": cases,
    }
    if not args.no_write:
        out_dir = ROOT / "benchmarks" / "results" / "micro"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"predlog-writer-{dt.date.today():%Y%m%d}-{sha}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A closed-loop HTTP load generator, run as its own process by ``shipyard tune``.

It runs apart from the server so that the two do not share a GIL. ``concurrency``
connections each send one POST, wait for the whole reply, and send the next one
(HTTP/1.1 keep-alive), for ``warmup_s`` then ``duration_s``; only replies that start
after the warm-up count. The client is a few lines over asyncio streams, so that the
load generator costs far less CPU than the server it measures.

Run: ``python -m shipyard.workflows._loadgen HOST PORT PATH BODY_FILE CONCURRENCY
DURATION_S WARMUP_S``; it prints one JSON object (see :func:`summarize`) on stdout.

Imports: stdlib only (the process must start fast).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from typing import Any

__all__ = ["percentile", "run_load", "summarize"]


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100, nearest rank) of already sorted values; NaN if none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(latencies_s: list[float], errors: int, elapsed_s: float) -> dict[str, Any]:
    """Requests per second and latency percentiles (ms) of one measured window."""
    lat = sorted(latencies_s)
    return {
        "requests": len(lat),
        "errors": errors,
        "elapsed_s": elapsed_s,
        "rps": len(lat) / elapsed_s if elapsed_s > 0 else 0.0,
        "p50_ms": percentile(lat, 50) * 1000,
        "p90_ms": percentile(lat, 90) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": (lat[-1] * 1000) if lat else math.nan,
    }


async def _client(
    host: str,
    port: int,
    request: bytes,
    start_at: float,
    stop_at: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            t1 = time.perf_counter()
            if t0 >= start_at and t1 <= stop_at:
                if status == 200:
                    latencies.append(t1 - t0)
                else:
                    errors[0] += 1
    finally:
        writer.close()


async def run_load(
    host: str,
    port: int,
    path: str,
    body: bytes,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.2,
) -> dict[str, Any]:
    """Drive ``POST path`` closed-loop at ``concurrency`` and summarize the measured window."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors = [0]
    start_at = time.perf_counter() + warmup_s
    stop_at = start_at + duration_s
    results = await asyncio.gather(
        *(
            _client(host, port, request, start_at, stop_at, latencies, errors)
            for _ in range(concurrency)
        ),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    out = summarize(latencies, errors[0] + len(failed), duration_s)
    if failed:
        out["failure"] = f"{type(failed[0]).__name__}: {failed[0]}"
    return out


def main(argv: list[str]) -> int:
    """Entry point of the load process; prints the summary as JSON."""
    host, port, path, body_file, concurrency, duration_s, warmup_s = argv
    with open(body_file, "rb") as f:
        body = f.read()
    summary = asyncio.run(
        run_load(
            host,
            int(port),
            path,
            body,
            concurrency=int(concurrency),
            duration_s=float(duration_s),
            warmup_s=float(warmup_s),
        )
    )
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

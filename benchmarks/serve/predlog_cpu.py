"""What the prediction log costs a server, as CPU time per request of each of its threads.

wrk's requests/s on a shared 2-core VM swings by 5-10% between runs, more than the cost
being measured; CPU time per answered request does not. For each model and concurrency,
the same server (batching on, pinned to core 0, wrk on core 1) runs with the log off and
on, alternately, ``--rounds`` times. Each run reads ``/proc/<pid>/task/*/stat`` before and
after a wrk run (and after a pause that lets the writer flush), and divides by the
requests the server counted in ``/metrics``. The main thread (event loop) and the log's
writer thread are reported apart; the ratio ``cpu_off / cpu_on`` is the throughput a
CPU-bound server keeps with logging on.

    python benchmarks/serve/predlog_cpu.py [--models S,M] [--concurrency 8,64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import run as serve  # noqa: E402
from _provenance import git_sha, host_info, versions  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def _threads(pid: int) -> dict[str, float]:
    """CPU seconds per thread id (the main thread's id is the pid)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        out[task.name] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def measure(
    info: dict[str, Any], home: Path, work: Path, key: str, conns: int, logged: bool, secs: int
) -> dict[str, Any]:
    body = work / f"{key}.json"
    body.write_bytes(info["body"])
    port = serve.free_port()
    env = {
        **os.environ,
        "SHIPYARD_HOME": str(home),
        "SHIPYARD_RUNTIME__INTRA_OP_THREADS": "1",
        "SHIPYARD_LOGGING__ACCESS_LOG": "false",
        "SHIPYARD_MONITORING__LOG_PREDICTIONS": "true" if logged else "false",
        "SHIPYARD_MONITORING__DIR": str(work / f"mon-{key}-{conns}-{time.time_ns()}"),
        "SHIPYARD_BATCHING__MAX_BATCH_SIZE": "64",
    }
    url = f"http://127.0.0.1:{port}/v2/models/{key.lower()}/infer"
    metrics = f"http://127.0.0.1:{port}/metrics"
    cmd = [serve.SHIPYARD, "serve", key.lower(), "--port", str(port)]
    proc = serve.start([*cmd, "--grpc-port", "0", "--management-port", "0"], env)
    try:
        serve.wait_ok(url, info["body"], proc=proc)
        serve.run_wrk(url, body, conns, 1)  # warm-up
        before, cpu0 = serve.scrape(metrics), _threads(proc.pid)
        load = serve.run_wrk(url, body, conns, secs)
        time.sleep(1.5)  # the writer flushes what it holds (counted in this run)
        after, cpu1 = serve.scrape(metrics), _threads(proc.pid)
    finally:
        serve.stop(proc)
    n = after["requests"] - before["requests"]
    per = {tid: (cpu1[tid] - cpu0.get(tid, 0.0)) / n * 1e6 for tid in cpu1}
    main = per.pop(str(proc.pid), 0.0)
    busiest = max(per.values(), default=0.0)  # the writer, when the log is on
    return {
        "rps": load["rps"],
        "cpu_us_per_request": round(main + sum(per.values()), 2),
        "main_thread_us": round(main, 2),
        "busiest_other_thread_us": round(busiest, 2),
        "dropped": after["predlog_dropped"],
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="S,M")
    ap.add_argument("--concurrency", default="8,64")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu-2core")
    args = ap.parse_args()
    if not shutil.which("wrk") or not shutil.which("taskset"):
        print("wrk and taskset are needed: apt-get install -y wrk util-linux", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="shipyard-predlog-cpu-"))
    home = work / "home"
    models = serve.build_models(work)
    serve.register_models(models, home)
    report: dict[str, Any] = {
        "benchmark": "predlog_cpu",
        "git_sha": git_sha(),
        "timestamp": datetime.now(UTC).isoformat(),
        "host": host_info(),
        "versions": versions("onnxruntime", "pyarrow", "uvicorn"),
        "parameters": vars(args) | {"batching": "max_batch_size 64", "server_cpu": "core 0"},
        "results": {},
    }
    for key in [m.strip().upper() for m in args.models.split(",")]:
        for conns in [int(c) for c in args.concurrency.split(",")]:
            runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
            for _ in range(args.rounds):  # alternate, so drift on the machine hits both
                for mode in ("off", "on"):
                    runs[mode].append(
                        measure(models[key], home, work, key, conns, mode == "on", args.seconds)
                    )
            off = min(r["cpu_us_per_request"] for r in runs["off"])
            on = min(r["cpu_us_per_request"] for r in runs["on"])
            res = {"runs": runs, "cpu_off_over_on": round(off / on, 3)}
            report["results"][f"{key}_c{conns}"] = res
            writer = min(r["busiest_other_thread_us"] for r in runs["on"])
            main_extra = min(r["main_thread_us"] for r in runs["on"]) - min(
                r["main_thread_us"] for r in runs["off"]
            )
            print(
                f"{key} c{conns}: {off:.1f} -> {on:.1f} µs/request "
                f"(ratio {off / on:.3f}; main thread +{main_extra:.1f}, writer {writer:.1f}); "
                f"dropped {max(r['dropped'] for r in runs['on']):.0f}",
                flush=True,
            )
    out_dir = serve.ROOT / "benchmarks" / "results" / args.device
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"predlog-cpu-{datetime.now(UTC):%Y%m%d-%H%M%S}-{report['git_sha']}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Server benchmark: shipyard against the bare-handler floor, same machine, same run.

    .venv/bin/python benchmarks/serve/run.py [--duration 10] [--quick]

Builds two models (S = LogisticRegression on digits, 64 features; M = the CIFAR-10 CNN,
3x32x32), registers them in a temporary registry, and for each drives with `wrk` (pinned
to core 1; servers pinned to core 0):
  * a no-op ASGI handler, to prove the client can push ≥ 1.5x the floor's rate;
  * the floor (benchmarks/serve/floor.py): uvicorn + orjson + numpy + ONNX Runtime inline;
  * shipyard serve, batching off and on; with batching on, the same server over gRPC too
    (grpc_load.py: 4 grpc.aio client processes pinned to core 1, raw tensor contents);
  * shipyard serve with batching and the prediction log at full sampling (monitoring is
    off in every other row), with the records it dropped read from /metrics.
Concurrency 1, 8 and 64 (gRPC: 8 and 64). Writes JSON (git sha, host, versions, parameters,
results, ratios) to benchmarks/results/<device>/serve-<date>-<sha>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PY = sys.executable
SHIPYARD = str(Path(PY).with_name("shipyard"))
sys.path.insert(0, str(HERE.parent))
from _provenance import git_sha, host_info, versions  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _versions() -> dict[str, str]:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    text = out.stdout or out.stderr
    return {**versions("orjson", "uvicorn"), "wrk": text.splitlines()[0] if text else "?"}


# ---- models ----------------------------------------------------------------------------


def build_models(work: Path) -> dict[str, dict[str, Any]]:
    """S (digits logistic regression) and M (CIFAR-10 CNN), as ONNX files plus request bodies."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    clf = LogisticRegression(max_iter=300).fit(x, y)
    s_path = work / "s.onnx"
    s_path.write_bytes(
        to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}).SerializeToString()
    )

    import torch

    from shipyard.testing import make_cifar_cnn

    cnn = make_cifar_cnn(seed=0).eval()
    m_path = work / "m.onnx"
    torch.onnx.export(
        cnn,
        (torch.zeros(1, 3, 32, 32),),
        str(m_path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        dynamo=False,
    )
    rng = np.random.default_rng(0)
    bodies = {}
    for key, name, shape in (("S", "X", [1, 64]), ("M", "input", [1, 3, 32, 32])):
        data = rng.random(int(np.prod(shape)), dtype=np.float32).round(4).tolist()
        bodies[key] = json.dumps(
            {"inputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": data}]}
        ).encode()
    return {
        "S": {"path": s_path, "body": bodies["S"], "input": "X", "shape": [1, 64]},
        "M": {"path": m_path, "body": bodies["M"], "input": "input", "shape": [1, 3, 32, 32]},
    }


def register_models(models: dict[str, dict[str, Any]], home: Path) -> None:
    env = {**os.environ, "SHIPYARD_HOME": str(home)}
    for key, info in models.items():
        subprocess.run(
            [SHIPYARD, "-q", "models", "register", str(info["path"]), "--name", key.lower()],
            env=env,
            check=True,
            capture_output=True,
        )


# ---- servers and load -------------------------------------------------------------------


def wait_ok(
    url: str, body: bytes, timeout_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None
) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {err}")
        try:
            req = urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", "0", *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(url: str, body_path: Path, conns: int, duration_s: int) -> dict[str, Any]:
    script = body_path.with_suffix(".lua")
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_path}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
    )
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{duration_s}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {}
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        lat[f"p{pct}_ms"] = float(m.group(1)) * _UNITS[m.group(2)] if m else None
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in sock.groups()) if sock else 0
    )
    return {"rps": rps, **lat, "errors": errors}


def scrape(url: str) -> dict[str, float]:
    """A few counters from a /metrics page: prediction-log drops and requests."""
    import urllib.request

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {"predlog_dropped": 0.0, "requests": 0.0}
    for line in text.splitlines():
        if line.startswith("shipyard_predlog_dropped_total"):
            out["predlog_dropped"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("shipyard_requests_total"):
            out["requests"] += float(line.rsplit(" ", 1)[1])
    return out


def run_grpc(
    target: str, model: str, input_name: str, shape: list[int], concurrency: int, duration_s: int
) -> dict[str, Any]:
    out = subprocess.run(
        [
            PY,
            str(HERE / "grpc_load.py"),
            target,
            model,
            "--input",
            input_name,
            "--shape",
            ",".join(map(str, shape)),
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration_s),
        ],
        env={**os.environ, "SHIPYARD_BENCH_CLIENT_CPUS": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bench_target(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    url: str,
    body: bytes,
    work: Path,
    levels: list[int],
    duration_s: int,
    grpc: dict[str, Any] | None = None,
    metrics_url: str | None = None,
) -> dict[str, Any]:
    """Launch ``cmd``, time its cold start, read its idle RSS, drive it with wrk.

    With ``grpc`` (target, model, input, shape), the same server is then driven over gRPC
    by ``grpc_load.py`` (4 client processes pinned to core 1) at the same levels but c1.
    """
    body_path = work / f"{name}.json"
    body_path.write_bytes(body)
    launched = time.perf_counter()
    proc = start(cmd, env)
    try:
        wait_ok(url, body, proc=proc)
        cold_start_s = time.perf_counter() - launched
        time.sleep(0.5)
        idle_rss = rss_mb(proc.pid)
        run_wrk(url, body_path, 8, 1)  # warm-up
        results = {f"c{c}": run_wrk(url, body_path, c, duration_s) for c in levels}
        if grpc is not None:
            results["grpc"] = {
                f"c{c}": run_grpc(**grpc, concurrency=c, duration_s=duration_s)
                for c in levels
                if c > 1
            }
        if metrics_url is not None:
            time.sleep(2)  # let the prediction log flush what it holds
            results["metrics"] = scrape(metrics_url)
        return {
            "cold_start_s": round(cold_start_s, 3),
            "idle_rss_mb": round(idle_rss, 1),
            **results,
        }
    finally:
        stop(proc)


def _cells(row: dict[str, Any], levels: list[int]) -> str:
    return "  ".join(
        f"c{c}: {row[f'c{c}']['rps']:8.0f} rps p99 {row[f'c{c}']['p99_ms']:.2f}ms "
        f"err {row[f'c{c}']['errors']}"
        for c in levels
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="3 s per level (smoke run)")
    ap.add_argument("--device", default="cpu-2core")
    ap.add_argument("--models", default="S,M", help="which of S and M to run (default both)")
    args = ap.parse_args()
    duration = 3 if args.quick else args.duration
    if not shutil.which("wrk") or not shutil.which("taskset"):
        print("wrk and taskset are needed: apt-get install -y wrk util-linux", file=sys.stderr)
        return 2
    levels = [1, 8, 64]
    work = Path(tempfile.mkdtemp(prefix="shipyard-bench-"))
    home = work / "home"
    models = build_models(work)
    register_models(models, home)
    base_env = {
        **os.environ,
        "SHIPYARD_HOME": str(home),
        "SHIPYARD_RUNTIME__INTRA_OP_THREADS": "1",
        "SHIPYARD_LOGGING__ACCESS_LOG": "false",
        "SHIPYARD_MONITORING__LOG_PREDICTIONS": "false",
        "SHIPYARD_MONITORING__DIR": str(work / "monitoring"),
        "FLOOR_THREADS": "1",
    }
    report: dict[str, Any] = {
        "benchmark": "serve",
        "git_sha": git_sha(),
        "timestamp": datetime.now(UTC).isoformat(),
        "host": host_info(),
        "versions": _versions(),
        "parameters": {
            "duration_s": duration,
            "concurrency": levels,
            "client": "wrk -t1 (core 1); gRPC: grpc_load.py, 4 grpc.aio processes (core 1)",
            "server_cpu": "taskset -c 0",
            "intra_op_threads": 1,
        },
        "results": {},
    }
    chosen = {m.strip().upper() for m in args.models.split(",")}
    for key, info in models.items():
        if key not in chosen:
            continue
        res: dict[str, Any] = {}
        port = free_port()
        res["noop"] = bench_target(
            "noop",
            [PY, str(HERE / "floor.py"), str(port), "--noop"],
            base_env,
            f"http://127.0.0.1:{port}/",
            info["body"],
            work,
            [8],
            duration,
        )
        port = free_port()
        res["floor"] = bench_target(
            "floor",
            [PY, str(HERE / "floor.py"), str(port)],
            {**base_env, "FLOOR_MODEL": str(info["path"])},
            f"http://127.0.0.1:{port}/",
            info["body"],
            work,
            levels,
            duration,
        )
        for batching in ("off", "on"):
            env = {
                **base_env,
                "SHIPYARD_BATCHING__MAX_BATCH_SIZE": "1" if batching == "off" else "64",
            }
            port, grpc_port = free_port(), free_port()
            url = f"http://127.0.0.1:{port}/v2/models/{key.lower()}/infer"
            grpc = {
                "target": f"127.0.0.1:{grpc_port}",
                "model": key.lower(),
                "input_name": info["input"],
                "shape": info["shape"],
            }
            res[f"shipyard_batching_{batching}"] = bench_target(
                f"shipyard-{batching}",
                [
                    SHIPYARD,
                    "serve",
                    key.lower(),
                    "--port",
                    str(port),
                    "--grpc-port",
                    str(grpc_port) if batching == "on" else "0",
                    "--management-port",
                    "0",
                ],
                env,
                url,
                info["body"],
                work,
                levels,
                duration,
                grpc=grpc if batching == "on" else None,
            )
        # the prediction log at full sampling, against the same server without it
        port = free_port()
        res["shipyard_batching_on_logged"] = bench_target(
            "shipyard-logged",
            [
                SHIPYARD,
                "serve",
                key.lower(),
                "--port",
                str(port),
                "--grpc-port",
                "0",
                "--management-port",
                "0",
            ],
            {
                **base_env,
                "SHIPYARD_BATCHING__MAX_BATCH_SIZE": "64",
                "SHIPYARD_MONITORING__LOG_PREDICTIONS": "true",
            },
            f"http://127.0.0.1:{port}/v2/models/{key.lower()}/infer",
            info["body"],
            work,
            [c for c in levels if c > 1],
            duration,
            metrics_url=f"http://127.0.0.1:{port}/metrics",
        )
        floor8 = res["floor"]["c8"]["rps"]
        res["client_headroom"] = round(res["noop"]["c8"]["rps"] / floor8, 2)
        res["ratios"] = {
            f"{target}_c{c}_rps": round(
                res[target][f"c{c}"]["rps"] / res["floor"][f"c{c}"]["rps"], 3
            )
            for target in ("shipyard_batching_off", "shipyard_batching_on")
            for c in levels
        }
        res["ratios"].update(
            {
                f"{target}_c1_p99": round(
                    res[target]["c1"]["p99_ms"] / res["floor"]["c1"]["p99_ms"], 3
                )
                for target in ("shipyard_batching_off", "shipyard_batching_on")
            }
        )
        on = res["shipyard_batching_on"]
        res["ratios"].update(
            {
                f"grpc_vs_rest_c{c}_rps": round(on["grpc"][f"c{c}"]["rps"] / on[f"c{c}"]["rps"], 3)
                for c in levels
                if c > 1
            }
        )
        logged = res["shipyard_batching_on_logged"]
        res["ratios"].update(
            {
                f"predlog_on_vs_off_c{c}_rps": round(logged[f"c{c}"]["rps"] / on[f"c{c}"]["rps"], 3)
                for c in levels
                if c > 1
            }
        )
        res["predlog_dropped"] = logged["metrics"]["predlog_dropped"]
        report["results"][key] = res
        print(f"== {key}: client headroom {res['client_headroom']}x the floor at c8")
        for target in ("floor", "shipyard_batching_off", "shipyard_batching_on"):
            row = res[target]
            tail = f"  rss {row['idle_rss_mb']} MB cold {row['cold_start_s']} s"
            print(f"  {target:24s} " + _cells(row, levels) + tail)
        print(f"  {'shipyard_grpc (batching)':24s} " + _cells(on["grpc"], levels[1:]))
        print(
            f"  {'shipyard + predlog':24s} "
            + _cells(logged, levels[1:])
            + f"  dropped {res['predlog_dropped']:.0f}"
        )
        print("  ratios:", json.dumps(res["ratios"]))
        if res["client_headroom"] < 1.5:
            print("  WARNING: the client cannot drive 1.5x the floor: results are client-bound")
    out_dir = ROOT / "benchmarks" / "results" / args.device
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"serve-{datetime.now(UTC):%Y%m%d-%H%M%S}-{report['git_sha']}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    shutil.rmtree(work, ignore_errors=True)
    ok = all(r["client_headroom"] >= 1.5 for r in report["results"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

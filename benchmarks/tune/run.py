"""`shipyard tune` benchmark: tuned serving settings against the defaults, same machine, same run.

    .venv/bin/python benchmarks/tune/run.py [--budget-s 40] [--concurrency 16] [--slo-p99-ms 20]

Builds an MLP in code (x: FP32 (N, 256) -> 1024 -> 1024 -> 10, ReLU), registers it in a
temporary registry, runs `shipyard.api.tune` on it, then measures the default settings
(global defaults: ORT's own thread count, batch 32, no wait) and the tuned ones, each
`--repeats` times, alternating, for `--duration-s` each, with the same closed-loop load
process tune uses (shipyard.workflows._loadgen). Reports medians with min/max, and the
ratios tuned/default. Writes JSON (git sha, host, versions, parameters, every trial and
every repeat) to benchmarks/results/<device>/tune-<date>-<sha>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _provenance import git_sha, host_info, versions  # noqa: E402


def build_mlp(path: Path, seed: int = 0) -> Path:
    """x (N, 256) -> Dense 1024 ReLU -> Dense 1024 ReLU -> Dense 10, as an ONNX file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    dims = [256, 1024, 1024, 10]
    nodes, inits = [], []
    prev = "x"
    for i in range(3):
        w = (rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])).astype(np.float32)
        b = np.zeros(dims[i + 1], np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "y" if i == 2 else f"h{i}"
        mm = f"mm{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [mm]))
        if i < 2:
            nodes.append(helper.make_node("Add", [mm, f"b{i}"], [f"a{i}"]))
            nodes.append(helper.make_node("Relu", [f"a{i}"], [out]))
        else:
            nodes.append(helper.make_node("Add", [mm, f"b{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(
    settings: Any,
    ref: str,
    serving: dict[str, Any] | None,
    body_file: Path,
    concurrency: int,
    duration_s: float,
) -> dict[str, Any]:
    """One closed-loop run against a fresh server (serving=None: no per-model layer)."""
    from shipyard.config import with_overrides
    from shipyard.server.runner import BackgroundServer

    port = free_port()
    srv = with_overrides(
        settings,
        {
            "server": {"port": port, "grpc_port": 0, "management_port": 0, "registry_poll_s": 0},
            "monitoring": {"log_predictions": False},
        },
    )
    cmd = [
        sys.executable,
        "-m",
        "shipyard.workflows._loadgen",
        "127.0.0.1",
        str(port),
        f"/v2/models/{ref}/infer",
        str(body_file),
        str(concurrency),
        str(duration_s),
        "0.5",
    ]
    with BackgroundServer([ref], srv, model_settings={ref: serving} if serving else None):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def spread(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [r[key] for r in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--budget-s", type=float, default=40.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--slo-p99-ms", type=float, default=20.0)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=f"cpu-{os.cpu_count()}core")
    args = parser.parse_args()

    import shipyard.api as api
    from shipyard.config import load_settings
    from shipyard.workflows.tune import sample_request

    with tempfile.TemporaryDirectory(prefix="shipyard-bench-tune-") as tmp:
        work = Path(tmp)
        settings = load_settings({"home": str(work / "home")})
        mv = api.register(build_mlp(work / "mlp.onnx"), name="mlp", settings=settings)
        ref = mv.ref
        result = api.tune(
            ref,
            slo_p99_ms=args.slo_p99_ms,
            concurrency=args.concurrency,
            budget_s=args.budget_s,
            settings=settings,
        )
        if result.chosen is None:
            print("no candidate met the SLO; raise --slo-p99-ms", file=sys.stderr)
            return 1
        tuned = result.chosen.candidate.serving()
        body_file = work / "body.json"
        body_file.write_bytes(sample_request(mv.manifest.signature))
        # the default row passes the global defaults as its top layer, over the tuned one
        baseline: dict[str, Any] = {
            "batching": settings.batching.model_dump(include={"max_batch_size", "max_wait_ms"}),
            "runtime": {"intra_op_threads": settings.runtime.intra_op_threads},
        }
        runs: dict[str, list[dict[str, Any]]] = {"default": [], "tuned": []}
        for _ in range(args.repeats):
            for name, serving in (("default", baseline), ("tuned", tuned)):
                runs[name].append(
                    measure(settings, ref, serving, body_file, args.concurrency, args.duration_s)
                )

    summary = {
        name: {k: spread(rs, k) for k in ("rps", "p50_ms", "p99_ms")} for name, rs in runs.items()
    }
    ratios = {
        "rps_tuned_over_default": summary["tuned"]["rps"]["median"]
        / summary["default"]["rps"]["median"],
        "p99_tuned_over_default": summary["tuned"]["p99_ms"]["median"]
        / summary["default"]["p99_ms"]["median"],
    }
    record = {
        "benchmark": "tune",
        "git_sha": git_sha(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": host_info(),
        "versions": versions(),
        "parameters": vars(args),
        "model": {"name": "mlp", "layers": [256, 1024, 1024, 10], "dtype": "FP32"},
        "default_settings": baseline,
        "tuned_settings": tuned,
        "tune": result.to_dict(),
        "runs": runs,
        "summary": summary,
        "ratios": ratios,
    }
    out_dir = ROOT / "benchmarks" / "results" / args.device
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"tune-{stamp}-{record['git_sha']}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")

    print(f"tune: {len(result.trials)} trials in {result.elapsed_s:.1f} s; chosen {tuned}")
    print(f"{'settings':<10} {'req/s (min-max)':>24} {'p50 ms':>8} {'p99 ms (min-max)':>22}")
    for name in ("default", "tuned"):
        s = summary[name]
        print(
            f"{name:<10} {s['rps']['median']:>9.0f} ({s['rps']['min']:.0f}-{s['rps']['max']:.0f})"
            f" {s['p50_ms']['median']:>8.2f} {s['p99_ms']['median']:>8.2f}"
            f" ({s['p99_ms']['min']:.2f}-{s['p99_ms']['max']:.2f})"
        )
    print(
        f"tuned/default: req/s x{ratios['rps_tuned_over_default']:.2f}, "
        f"p99 x{ratios['p99_tuned_over_default']:.2f}  -> {path.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

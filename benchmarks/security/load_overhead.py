"""Benchmark: what integrity, encryption at rest and the load-time safety check add to a load.

For models of several sizes, in one run against the same baseline:

- baseline: ``onnxruntime.InferenceSession(bytes)`` (what any server must do to load);
- ``read_plain``: ``ModelRegistry.read_artifact`` on a plaintext registry (read + sha256);
- ``read_encrypted``: the same on an encrypted registry (read + AES-256-GCM decrypt + sha256);
- ``safety_check``: ``check_model_safety`` (protobuf parse of the opset domains and
  external-data flags).

Ratios are each step's median over the baseline's median.

Run:  .venv/bin/python benchmarks/security/load_overhead.py [--quick] [--no-write]
Writes benchmarks/results/security/<date>-<sha>.json (sha, host, versions, parameters,
results).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from shipyard.config import load_settings
from shipyard.registry import ModelRegistry
from shipyard.runtime.onnx import check_model_safety
from shipyard.spec import DType, Lineage, NewVersion, Signature, TensorSpec

ROOT = Path(__file__).resolve().parents[2]


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _model(n_features: int, n_out: int) -> bytes:
    w = np.random.default_rng(0).normal(size=(n_features, n_out)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1000)
    return statistics.median(runs)


def _registry(home: Path, encrypt: bool) -> ModelRegistry:
    return ModelRegistry.open(load_settings({"home": str(home), "registry": {"encrypt": encrypt}}))


def run(sizes_mb: list[int], repeat: int) -> list[dict[str, Any]]:
    os.environ["SHIPYARD_ENCRYPTION_KEY"] = base64.b64encode(os.urandom(32)).decode()
    rows = []
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        for mb in sizes_mb:
            n_out = 256
            n_features = max(1, mb * 1024 * 1024 // (4 * n_out))
            data = _model(n_features, n_out)
            path = Path(tmp) / f"m{mb}.onnx"
            path.write_bytes(data)
            sig = Signature(
                inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, n_features)),),
                outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, n_out)),),
            )
            new = NewVersion(signature=sig, framework="onnx", lineage=Lineage())
            row: dict[str, Any] = {"model_bytes": len(data)}
            row["baseline_session_ms"] = _median_ms(
                lambda data=data: ort.InferenceSession(
                    data, opts, providers=["CPUExecutionProvider"]
                ),
                repeat,
            )
            for enc in (False, True):
                reg = _registry(Path(tmp) / f"home-{mb}-{enc}", enc)
                mv = reg.register("m", new, {"model.onnx": path})
                key = "read_encrypted_ms" if enc else "read_plain_ms"
                row[key] = _median_ms(lambda reg=reg, mv=mv: reg.read_artifact(mv), repeat)
                reg.close()
            row["safety_check_ms"] = _median_ms(
                lambda data=data: check_model_safety(data, ("",), "m:1"), repeat
            )
            base = row["baseline_session_ms"]
            for k in ("read_plain_ms", "read_encrypted_ms", "safety_check_ms"):
                row[k.replace("_ms", "_ratio")] = row[k] / base
            row["encryption_extra_ratio"] = (row["read_encrypted_ms"] - row["read_plain_ms"]) / base
            rows.append(row)
            print(json.dumps(row))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="Small models, few repeats.")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    sizes = [1, 8] if args.quick else [1, 16, 128]
    repeat = 3 if args.quick else 7
    rows = run(sizes, repeat)
    doc = {
        "benchmark": "security/load_overhead",
        "git_sha": _git_sha(),
        "when": dt.datetime.now(dt.UTC).isoformat(),
        "host": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_1m_at_start": os.getloadavg()[0],
            "python": sys.version.split()[0],
        },
        "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__},
        "parameters": {"sizes_mb": sizes, "repeat": repeat, "intra_op_threads": 1},
        "results": rows,
    }
    if not args.no_write:
        out = ROOT / "benchmarks" / "results" / "security"
        out.mkdir(parents=True, exist_ok=True)
        name = f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{doc['git_sha']}.json"
        (out / name).write_text(json.dumps(doc, indent=2))
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

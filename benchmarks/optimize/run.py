"""Benchmark `shipyard optimize` end to end: train, register, optimize, gate, report.

Two models, each measured against its own fp32 baseline (ONNX Runtime ORT_ENABLE_ALL, same
thread count) in the same run:

* cnn: the CIFAR-10 CNN of benchmarks/serve (conv32-pool-conv64-pool-fc64-fc10) trained on a
  learnable synthetic image task (no package ships CIFAR-10): 10 classes, each a smooth
  class-specific pattern plus a random shift, contrast and strong pixel noise;
  2,000 validation images.
* digits: scikit-learn's MLP on the digits dataset (shipped with scikit-learn).

Writes JSON (git sha, host, versions, parameters, figures, ratios) to
benchmarks/results/<device>/optimize-<date>-<sha>.json and prints a table of ratios.

    .venv/bin/python benchmarks/optimize/run.py [--threads 1,2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _provenance import git_sha, host_info, versions  # noqa: E402

# ---- data and models --------------------------------------------------------------------


def synthetic_images(
    n: int, rng: np.random.Generator, patterns: np.ndarray, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Images of class k: pattern k, randomly shifted and scaled, plus Gaussian noise."""
    y = rng.integers(0, len(patterns), size=n)
    x = patterns[y].copy()
    shifts = rng.integers(-3, 4, size=(n, 2))
    for i, (dy, dx) in enumerate(shifts):
        x[i] = np.roll(x[i], (int(dy), int(dx)), axis=(1, 2))
    x *= rng.uniform(0.6, 1.4, size=(n, 1, 1, 1))
    x += rng.normal(0.0, noise, size=x.shape)
    return x.astype(np.float32), y.astype(np.int64)


def make_patterns(rng: np.random.Generator, k: int = 10) -> np.ndarray:
    """Smooth random 3x32x32 patterns (sums of low-frequency sinusoids), one per class."""
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    out = np.zeros((k, 3, 32, 32))
    for c in range(k):
        for ch in range(3):
            for _ in range(3):
                fy, fx = rng.uniform(0.5, 3.0, size=2)
                ph = rng.uniform(0, 2 * np.pi)
                out[c, ch] += np.sin(2 * np.pi * (fy * yy + fx * xx) + ph)
    return (out / 3.0).astype(np.float32)


def train_cnn(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> Any:
    import torch
    from torch import nn

    from shipyard.testing import make_cifar_cnn

    torch.set_num_threads(os.cpu_count() or 1)
    cnn = make_cifar_cnn(seed=seed)
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(cnn(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return cnn.eval()


# ---- the run ----------------------------------------------------------------------------


def ratios(res: Any) -> dict[str, Any]:
    base = res.baseline.figures
    out: dict[str, Any] = {}
    for v in res.variants:
        f = v.figures
        if not f:
            out[v.name] = {"status": v.status, "reason": v.reason}
            continue
        out[v.name] = {
            "status": v.status,
            "throughput_b32_x": f["batch32"]["throughput_rps"] / base["batch32"]["throughput_rps"],
            "throughput_b1_x": f["batch1"]["throughput_rps"] / base["batch1"]["throughput_rps"],
            "cpu_throughput_b32_x": f["batch32"]["rows_per_cpu_s"]
            / base["batch32"]["rows_per_cpu_s"],
            "p50_b1_x": base["batch1"]["p50_ms"] / f["batch1"]["p50_ms"],
            "size_frac": f["size_bytes"] / base["size_bytes"],
            "load_x": base["load_ms"] / f["load_ms"],
            "delta": v.delta,
            "max_abs_error": f["parity"]["max_abs_error"],
            "label_agreement": f["parity"]["label_agreement"],
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--quick", action="store_true", help="small data and short timings")
    ap.add_argument("--device", default="cpu-2core")
    ap.add_argument("--max-drop", type=float, default=0.01)
    args = ap.parse_args()

    from shipyard import api
    from shipyard.config import load_settings
    from shipyard.workflows._measure import Budget

    n_train, n_val, epochs = (2000, 2000, 2) if args.quick else (8000, 2000, 4)
    budget = (
        Budget(iterations=60, seconds=0.5)
        if args.quick
        else Budget(iterations=600, seconds=6.0, rounds=15)
    )
    threads = [int(t) for t in args.threads.split(",")]
    report: dict[str, Any] = {
        "benchmark": "optimize",
        "timestamp": datetime.now(UTC).isoformat(),
        "git_sha": git_sha(),
        "host": host_info(),
        "versions": versions("onnx", "torch", "sklearn"),
        "parameters": {
            "threads": threads,
            "max_drop": args.max_drop,
            "n_train": n_train,
            "n_val": n_val,
            "epochs": epochs,
            "budget": budget.__dict__,
            "objective": "throughput",
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-opt-") as tmp:
        work = Path(tmp)
        settings = load_settings({"home": str(work / "home")})
        rng = np.random.default_rng(0)
        patterns = make_patterns(rng)
        noise = 1.6
        x_tr, y_tr = synthetic_images(n_train, rng, patterns, noise)
        x_va, y_va = synthetic_images(n_val, rng, patterns, noise)
        t0 = time.perf_counter()
        cnn = train_cnn(x_tr, y_tr, epochs, seed=0)
        print(f"cnn trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        api.register(
            cnn,
            name="cnn",
            framework="torch",
            sample_input=x_va[:8],
            task="classification",
            class_labels=list(range(10)),
            settings=settings,
        )
        np.savez(work / "cnn-val.npz", input=x_va, y=y_va)

        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from sklearn.neural_network import MLPClassifier

        xd, yd = load_digits(return_X_y=True)
        xd = (xd / 16.0).astype(np.float32)
        xa, xb, ya, yb = train_test_split(xd, yd, test_size=0.4, random_state=0)
        mlp = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=300, random_state=0).fit(xa, ya)
        mv = api.register(mlp, name="digits", sample_input=xa[:8], settings=settings)
        input_name = mv.manifest.signature.inputs[0].name
        np.savez(work / "digits-val.npz", **{input_name: xb, "y": yb})
        cnn_input = api.open_registry(settings).get("cnn").manifest.signature.inputs[0].name
        if cnn_input != "input":
            np.savez(work / "cnn-val.npz", **{cnn_input: x_va, "y": y_va})

        for model in ("cnn", "digits"):
            for t in threads:
                t0 = time.perf_counter()
                res = api.optimize(
                    f"{model}:1",
                    work / f"{model}-val.npz",
                    max_drop=args.max_drop,
                    objective="throughput",
                    threads=t,
                    register=True,
                    settings=settings,
                    budget=budget,
                )
                elapsed = time.perf_counter() - t0
                key = f"{model}-t{t}"
                report["models"][key] = {
                    "elapsed_s": elapsed,
                    "n_val": res.n_rows,
                    "fp32_accuracy": res.baseline.figures["quality"]["accuracy"],
                    "best": res.best,
                    "best_throughput_b32_x": res.speedup,
                    "ratios": ratios(res),
                    "result": res.summary(),
                }
                print(
                    f"\n{key}: fp32 accuracy {res.baseline.figures['quality']['accuracy']:.4f}, "
                    f"best {res.best} {res.speedup or 0:.2f}x throughput at batch 32 "
                    f"({elapsed:.0f} s)"
                )
                for name, r in report["models"][key]["ratios"].items():
                    if "throughput_b32_x" in r:
                        print(
                            f"  {name:42s} {r['status']:8s} b32 {r['throughput_b32_x']:.2f}x  "
                            f"(cpu {r['cpu_throughput_b32_x']:.2f}x)  "
                            f"b1 {r['throughput_b1_x']:.2f}x  size {r['size_frac']:.2f}  "
                            f"load {r['load_x']:.2f}x  delta {r['delta']:+.4f}"
                        )
                    else:
                        print(f"  {name:42s} {r['status']:8s} {r['reason']}")
    out_dir = ROOT / "benchmarks" / "results" / args.device
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"optimize-{stamp}-{report['git_sha']}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Drift benchmark: shipyard's vectorised KS + PSI against per-column scipy, same data, same run.

    .venv/bin/python benchmarks/monitoring/drift.py [--rows 1000000] [--ref-rows 100000]
        [--features 100] [--seed 0]

Data: a float64 reference (ref-rows x features, standard normal) and a current window
(rows x features): half the features unchanged, a quarter shifted by +0.01, a quarter
scaled by 1.01 (so both the no-drift and the drift code paths of the KS p-value run).
Times `Reference.build` and `drift` (KS and PSI for every feature), then
`scipy.stats.ks_2samp` column by column (KS only), and checks that shipyard's statistics
and p-values equal scipy's (max abs difference). Writes JSON (git sha, host, versions,
parameters, timings, ratio, max differences) to
benchmarks/results/cpu-2core/drift-<date>-<sha>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _provenance import git_sha, host_info, versions  # noqa: E402


def make_data(rows: int, ref_rows: int, features: int, seed: int) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((ref_rows, features))
    cur = rng.standard_normal((rows, features))
    q = features // 4
    cur[:, features - 2 * q : features - q] += 0.01
    cur[:, features - q :] *= 1.01
    return ref, cur


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--ref-rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu-2core")
    args = parser.parse_args()

    import scipy.stats

    from shipyard.monitoring.drift import Reference, drift

    ref, cur = make_data(args.rows, args.ref_rows, args.features, args.seed)
    names = [f"f{i}" for i in range(args.features)]
    host = {**host_info(), "loadavg_before": os.getloadavg()}

    t0 = time.perf_counter()
    reference = Reference.build(ref, feature_names=names)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = drift(reference, cur, feature_names=names)
    t_drift = time.perf_counter() - t0
    print(f"shipyard: Reference.build {t_build:.2f}s, drift (KS + PSI) {t_drift:.2f}s")

    t0 = time.perf_counter()
    scipy_results = [scipy.stats.ks_2samp(ref[:, i], cur[:, i]) for i in range(args.features)]
    t_scipy = time.perf_counter() - t0
    print(f"scipy ks_2samp per column: {t_scipy:.2f}s")

    ks = [r for r in report.features if r.test == "ks"]
    pairs = list(zip(ks, scipy_results, strict=True))
    d_stat = max(abs((k.statistic or 0.0) - s.statistic) for k, s in pairs)
    d_p = max(abs((k.p_value or 0.0) - s.pvalue) for k, s in pairs)
    ratio = t_scipy / t_drift
    print(
        f"ratio scipy / shipyard drift: {ratio:.1f}x; max |dD| {d_stat:.2e}, max |dp| {d_p:.2e}; "
        f"{len(report.drifted_features)} of {args.features} features drifted"
    )
    result = {
        "benchmark": "monitoring/drift",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "host": host,
        "versions": versions("scipy"),
        "parameters": vars(args) | {"out": str(args.out), "dtype": "float64"},
        "seconds": {
            "shipyard_reference_build": t_build,
            "shipyard_drift_ks_psi": t_drift,
            "scipy_ks_2samp_per_column": t_scipy,
        },
        "ratio_scipy_over_shipyard": ratio,
        "max_abs_diff_vs_scipy": {"ks_statistic": d_stat, "ks_p_value": d_p},
        "drifted_features": len(report.drifted_features),
        "loadavg_after": os.getloadavg(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = args.out / f"drift-{stamp}-{result['git_sha']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

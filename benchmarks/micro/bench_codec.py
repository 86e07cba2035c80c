"""Micro-benchmark: V2 codec decode/encode against a bare baseline, in one run.

The bare baseline is the least any server must do: ``orjson.loads`` + ``np.asarray`` (or
``np.frombuffer``) + ``reshape`` to decode, and one ``orjson.dumps`` to encode. Our codec
adds validation (datatype, shape, element counts before allocation, depth, lengths that
lie) and must stay within 1.3x of it on decode.

Run:  .venv/bin/python benchmarks/micro/bench_codec.py [--quick] [--no-write]
Writes benchmarks/results/micro/<date>-<sha>.json (sha, host, versions, parameters,
results).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from shipyard.server.codec import DecodeLimits, decode_infer_request, encode_infer_response

ROOT = Path(__file__).resolve().parents[2]
_NP = {"FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64), "INT64": np.dtype(np.int64)}
BUDGET = 1.3


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        sha = out.stdout.strip() or "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src/shipyard/server"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _time_us(fn: Callable[[], Any], number: int, repeat: int) -> dict[str, float]:
    fn()  # warm up
    runs = [t / number * 1e6 for t in timeit.repeat(fn, number=number, repeat=repeat)]
    return {"min_us": min(runs), "median_us": statistics.median(runs), "max_us": max(runs)}


def json_case(number: int, repeat: int) -> dict[str, Any]:
    x = np.random.default_rng(0).normal(size=(1, 64)).astype(np.float32)
    body = orjson.dumps(
        {
            "id": "bench",
            "inputs": [
                {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}
            ],
        }
    )
    limits = DecodeLimits()
    y = x * 2

    def bare_decode() -> Any:
        doc = orjson.loads(body)
        inp = doc["inputs"][0]
        return np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])

    def generic_decode() -> Any:
        # what any server must read: datatype -> dtype, shape, data, requested outputs
        doc = orjson.loads(body)
        inputs = {}
        for inp in doc["inputs"]:
            dtype = _NP[inp["datatype"]]
            inputs[inp["name"]] = np.asarray(inp["data"], dtype=dtype).reshape(inp["shape"])
        return inputs, doc.get("outputs"), doc.get("id")

    def ours_decode() -> Any:
        return decode_infer_request(body, limits=limits)

    req = ours_decode()

    def bare_both() -> Any:
        arr = bare_decode()
        return orjson.dumps(
            {
                "model_name": "m",
                "model_version": "1",
                "id": "bench",
                "outputs": [
                    {"name": "y", "datatype": "FP32", "shape": [1, 64], "data": arr.reshape(-1)}
                ],
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    def ours_both() -> Any:
        r = decode_infer_request(body, limits=limits)
        return encode_infer_response(r, {"y": r.inputs[0].data}, model_name="m", model_version="1")

    np.testing.assert_array_equal(req.tensors()["x"], bare_decode())
    assert (
        json.loads(ours_both()[0])["outputs"][0]["data"]
        == json.loads(bare_both())["outputs"][0]["data"]
    )
    del y
    return {
        "name": "v2_json_fp32_1x64",
        "body_bytes": len(body),
        "decode": {
            "bare": _time_us(bare_decode, number, repeat),
            "generic": _time_us(generic_decode, number, repeat),
            "ours": _time_us(ours_decode, number, repeat),
        },
        "decode_encode": {
            "bare": _time_us(bare_both, number, repeat),
            "ours": _time_us(ours_both, number, repeat),
        },
    }


def binary_case(number: int, repeat: int) -> dict[str, Any]:
    shape = [32, 3, 32, 32]
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    raw = x.tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": shape,
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    )
    body = header + raw
    n = len(header)
    limits = DecodeLimits()

    def bare_decode() -> Any:
        doc = orjson.loads(memoryview(body)[:n])
        inp = doc["inputs"][0]
        return np.frombuffer(memoryview(body)[n:], dtype=np.float32).reshape(inp["shape"])

    def generic_decode() -> Any:
        # what any server must read: datatype -> dtype, shape, each binary_data_size slice,
        # and the requested outputs' binary flags
        view = memoryview(body)
        doc = orjson.loads(view[:n])
        inputs, offset = {}, n
        for inp in doc["inputs"]:
            size = inp["parameters"]["binary_data_size"]
            arr = np.frombuffer(view[offset : offset + size], dtype=_NP[inp["datatype"]])
            inputs[inp["name"]] = arr.reshape(inp["shape"])
            offset += size
        flags = [o["parameters"]["binary_data"] for o in doc.get("outputs", ())]
        return inputs, flags

    def ours_decode() -> Any:
        return decode_infer_request(body, header_length=n, limits=limits)

    def bare_both() -> Any:
        arr = bare_decode()
        head = orjson.dumps(
            {
                "model_name": "m",
                "model_version": "1",
                "outputs": [
                    {
                        "name": "y",
                        "datatype": "FP32",
                        "shape": shape,
                        "parameters": {"binary_data_size": arr.nbytes},
                    }
                ],
            }
        )
        return head + arr.tobytes()

    def ours_both() -> Any:
        r = decode_infer_request(body, header_length=n, limits=limits)
        return encode_infer_response(r, {"y": r.inputs[0].data}, model_name="m", model_version="1")

    np.testing.assert_array_equal(ours_decode().tensors()["x"], bare_decode())
    assert len(ours_both()[0]) == len(bare_both())
    return {
        "name": "v2_binary_fp32_32x3x32x32",
        "body_bytes": len(body),
        "decode": {
            "bare": _time_us(bare_decode, number, repeat),
            "generic": _time_us(generic_decode, number, repeat),
            "ours": _time_us(ours_decode, number, repeat),
        },
        "decode_encode": {
            "bare": _time_us(bare_both, number // 4 or 1, repeat),
            "ours": _time_us(ours_both, number // 4 or 1, repeat),
        },
    }


def depth_prescan_case(number: int, repeat: int) -> dict[str, Any]:
    """What a byte pre-scan of JSON nesting would cost, next to parsing the same body."""
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": list(range(64))}]}
    )
    table = np.zeros(256, dtype=np.int8)
    table[[ord("["), ord("{")]] = 1
    table[[ord("]"), ord("}")]] = -1

    def prescan() -> int:
        return int(np.cumsum(table[np.frombuffer(body, dtype=np.uint8)], dtype=np.int32).max())

    return {
        "name": "json_depth_prescan_vs_parse_1x64",
        "prescan": _time_us(prescan, number, repeat),
        "orjson_loads": _time_us(lambda: orjson.loads(body), number, repeat),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    number, repeat = (500, 3) if args.quick else (5000, 7)
    cases = [
        json_case(number, repeat),
        binary_case(number, repeat),
        depth_prescan_case(number, repeat),
    ]
    ok = True
    for case in cases:
        if "decode" not in case:
            print(
                f"{case['name']}: prescan {case['prescan']['min_us']:.2f} us vs orjson.loads "
                f"{case['orjson_loads']['min_us']:.2f} us"
            )
            continue
        for part in ("decode", "decode_encode"):
            timings = case[part]
            bare, ours = timings["bare"]["min_us"], timings["ours"]["min_us"]
            timings["ratio_vs_bare_min"] = ours / bare
            timings["ratio_vs_bare_median"] = (
                timings["ours"]["median_us"] / timings["bare"]["median_us"]
            )
            line = f"{case['name']:27s} {part:13s} bare {bare:6.2f} us"
            if "generic" in timings:
                generic = timings["generic"]["min_us"]
                timings["ratio_vs_generic_min"] = ours / generic
                line += f"  generic {generic:6.2f} us"
            line += f"  ours {ours:6.2f} us  ours/bare {ours / bare:4.2f}x"
            if "generic" in timings:
                line += f"  ours/generic {ours / generic:4.2f}x"
                if ours / generic > BUDGET:
                    ok = False
                    line += f"  OVER {BUDGET}x"
            print(line)
    sha = _git_sha()
    result = {
        "benchmark": "bench_codec",
        "git_sha": sha,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {
            "node": platform.node(),
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
        },
        "versions": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "orjson": orjson.__version__,
        },
        "parameters": {
            "number": number,
            "repeat": repeat,
            "statistic": "min and median of repeats, per call",
            "budget_decode_ratio": BUDGET,
        },
        "results": cases,
        "within_budget": ok,
    }
    if not args.no_write:
        out_dir = ROOT / "benchmarks" / "results" / "micro"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{dt.date.today():%Y%m%d}-{sha}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""A closed-loop gRPC load generator: several processes, each a grpc.aio client (C core).

    python grpc_load.py HOST:PORT MODEL --input input --shape 1,3,32,32 --concurrency 64

Requests carry the tensor in raw_input_contents (as tritonclient sends it). Prints one JSON
line: requests/s, latency percentiles in ms, errors. Client processes pin themselves to the
CPUs in SHIPYARD_BENCH_CLIENT_CPUS (default: all).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import time
from typing import Any

import numpy as np


def _worker(
    target: str, model: str, shape: list[int], conc: int, duration: float, q: Any, name: str
) -> None:
    cpus = os.environ.get("SHIPYARD_BENCH_CLIENT_CPUS")
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    import grpc

    from shipyard.server.grpc import inference_pb2 as pb
    from shipyard.server.grpc import inference_pb2_grpc as pb_grpc

    async def main() -> None:
        channel = grpc.aio.insecure_channel(target)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        req = pb.ModelInferRequest(model_name=model)
        req.inputs.add(name=name, datatype="FP32", shape=shape)
        req.raw_input_contents.append(
            np.random.default_rng(0).random(shape, dtype=np.float32).tobytes()
        )
        await stub.ModelInfer(req)  # warm the channel
        latencies: list[float] = []
        errors = 0
        end = time.perf_counter() + duration

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    await stub.ModelInfer(req)
                except grpc.RpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(loop() for _ in range(conc)))
        await channel.close()
        q.put((latencies, errors))

    asyncio.run(main())


def run_load(
    target: str,
    model: str,
    shape: list[int],
    concurrency: int,
    duration: float,
    processes: int = 4,
    input_name: str = "input",
) -> dict[str, Any]:
    """Drive ``concurrency`` in-flight requests split over ``processes`` clients."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    per = [
        concurrency // processes + (1 if i < concurrency % processes else 0)
        for i in range(processes)
    ]
    procs = [
        ctx.Process(target=_worker, args=(target, model, shape, c, duration, q, input_name))
        for c in per
        if c
    ]
    for p in procs:
        p.start()
    lat: list[float] = []
    errors = 0
    for _ in procs:
        got, err = q.get(timeout=duration + 120)
        lat.extend(got)
        errors += err
    for p in procs:
        p.join()
    arr = np.sort(np.asarray(lat)) * 1000 if lat else np.asarray([float("nan")])
    return {
        "rps": len(lat) / duration,
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)),
        "errors": errors,
        "client": f"{len(procs)} processes x grpc.aio (C core)",
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("model")
    ap.add_argument("--shape", default="1,3,32,32")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--input", default="input", help="the model's input name")
    a = ap.parse_args()
    shape = [int(d) for d in a.shape.split(",")]
    print(
        json.dumps(
            run_load(a.target, a.model, shape, a.concurrency, a.duration, a.processes, a.input)
        )
    )
    sys.exit(0)

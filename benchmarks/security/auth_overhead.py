"""Cost of token auth per REST request: an ASGI app bare vs. behind AuthMiddleware.

Both run in the same process, same run: the bare app (what auth=off serves, since the
app is not wrapped at all) and the same app behind ``AuthMiddleware`` with a cached
token (the hot path: one dict lookup). Reports µs per request and the difference.

    python benchmarks/security/auth_overhead.py [--n 200000]

Writes benchmarks/results/security/auth-<date>-<sha>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _provenance import ROOT, git_sha, host_info, versions

from shipyard.security import Authenticator, TokenStore
from shipyard.server._auth import AuthMiddleware


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})


async def _noop_send(message: Any) -> None:
    return None


async def _receive() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _time(app: Any, scope: dict[str, Any], n: int) -> float:
    for _ in range(1000):
        await app(dict(scope), _receive, _noop_send)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            await app(dict(scope), _receive, _noop_send)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = TokenStore(Path(tmp) / "security.db")
        raw, _ = store.create("bench", ["infer"])
        wrapped = AuthMiddleware(_app, Authenticator(store), management=False)
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v2/models/m/infer",
            "client": ("127.0.0.1", 5000),
            "headers": [
                (b"host", b"x"),
                (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {raw}".encode()),
            ],
        }
        bare_us = asyncio.run(_time(_app, scope, args.n))
        auth_us = asyncio.run(_time(wrapped, scope, args.n))
        store.close()
    result = {
        "benchmark": "auth_overhead",
        "git_sha": git_sha(),
        "host": host_info(),
        "versions": versions("starlette", "sqlalchemy"),
        "parameters": {"n": args.n, "repeats": 5, "stat": "best of 5"},
        "results": {
            "bare_us_per_request": round(bare_us, 3),
            "auth_us_per_request": round(auth_us, 3),
            "added_us_per_request": round(auth_us - bare_us, 3),
            "ratio_auth_over_bare": round(auth_us / bare_us, 3),
        },
    }
    out = ROOT / "benchmarks" / "results" / "security"
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = out / f"auth-{stamp}-{result['git_sha']}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["results"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

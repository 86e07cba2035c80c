"""The floor: a bare ASGI handler that any model server must be measured against.

uvicorn (uvloop + httptools, one process, no access log) → read the body → orjson →
numpy → ONNX Runtime inline → orjson. No routing, no validation, no metrics, no batching.
Committed as it is; never tune it down.

    FLOOR_MODEL=model.onnx FLOOR_THREADS=1 python floor.py PORT
    python floor.py PORT --noop        # answers a fixed body: measures the load client
"""

from __future__ import annotations

import os
import sys

import numpy as np
import orjson
import uvicorn

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
NP_TO_V2 = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32"}


def make_app(noop: bool):  # type: ignore[no-untyped-def]
    if noop:
        fixed = orjson.dumps({"model_name": "noop", "outputs": []})

        async def noop_app(scope, receive, send):  # type: ignore[no-untyped-def]
            more = True
            while more:
                msg = await receive()
                more = msg.get("more_body", False)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": fixed})

        return noop_app

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("FLOOR_THREADS", "1"))
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(os.environ["FLOOR_MODEL"], opts, providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        req = orjson.loads(body)
        inp = req["inputs"][0]
        arr = np.asarray(inp["data"], dtype=DTYPES[inp["datatype"]]).reshape(inp["shape"])
        results = sess.run(None, {input_name: arr})
        outputs = [
            {
                "name": meta.name,
                "shape": list(res.shape),
                "datatype": NP_TO_V2.get(res.dtype.name, "BYTES"),
                "data": res.ravel(),
            }
            for meta, res in zip(sess.get_outputs(), results, strict=True)
        ]
        out = orjson.dumps(
            {"model_name": "floor", "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": out})

    return app


if __name__ == "__main__":
    port = int(sys.argv[1])
    uvicorn.run(
        make_app("--noop" in sys.argv),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
    )

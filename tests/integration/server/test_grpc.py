"""Open Inference Protocol over gRPC with the unmodified tritonclient.grpc."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from shipyard.registry import ModelRegistry

from .conftest import (
    RunningServer,
    register_tiny,
    server_settings,
    start_server,
    stop_server,
    tiny_expected,
)


def test_tritonclient_grpc_health_metadata_and_infer(served: RunningServer) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(served.grpc)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("tiny")
        assert client.is_model_ready("tiny", model_version="1")
        meta = client.get_model_metadata("tiny", as_json=True)
        assert meta["inputs"][0]["name"] == "x"
        assert meta["inputs"][0]["shape"] == ["-1", "4"]
        x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
        inp = grpcclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = client.infer("tiny", [inp], model_version="1")
        np.testing.assert_allclose(res.as_numpy("y"), tiny_expected(x, seed=0), rtol=1e-5)
        assert res.get_response().model_version == "1"
    finally:
        client.close()


def test_grpc_errors_map_to_status_codes(served: RunningServer) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(served.grpc)
    try:
        x = np.zeros((1, 5), dtype=np.float32)
        inp = grpcclient.InferInput("x", [1, 5], "FP32")
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as info:
            client.infer("tiny", [inp])
        assert "INVALID_ARGUMENT" in str(info.value.status())
        assert "shape" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            client.infer("ghost", [inp])
        assert "NOT_FOUND" in str(info.value.status())
    finally:
        client.close()


def test_grpc_lying_raw_length_is_invalid_argument(served: RunningServer) -> None:
    import grpc

    from shipyard.server.grpc import inference_pb2 as pb
    from shipyard.server.grpc import inference_pb2_grpc as pb_grpc

    with grpc.insecure_channel(served.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        req = pb.ModelInferRequest(model_name="tiny")
        req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        req.raw_input_contents.append(b"\x00" * 12)  # 3 floats, not 4
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(req)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert stub.ServerLive(pb.ServerLiveRequest()).live


def _infer_request(x: np.ndarray) -> object:
    from shipyard.server.grpc import inference_pb2 as pb

    req = pb.ModelInferRequest(model_name="tiny")
    req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.astype(np.float32).tobytes())
    return req


def _batches(served: RunningServer) -> tuple[float, float]:
    """(batches run, requests in them) for `tiny` from /metrics."""
    import httpx

    text = httpx.get(served.http + "/metrics").text
    count = rows = 0.0
    for line in text.splitlines():
        if line.startswith("shipyard_batch_size_count") and 'model="tiny"' in line:
            count += float(line.rsplit(" ", 1)[1])
        if line.startswith("shipyard_batch_size_sum") and 'model="tiny"' in line:
            rows += float(line.rsplit(" ", 1)[1])
    return count, rows


def test_grpc_concurrent_distinct_requests_are_batched_and_never_mixed(
    served: RunningServer,
) -> None:
    import grpc

    from shipyard.server.grpc import inference_pb2_grpc as pb_grpc

    rng = np.random.default_rng(7)
    xs = [rng.normal(size=(1 + i % 3, 4)).astype(np.float32) for i in range(300)]
    before = _batches(served)
    with grpc.insecure_channel(served.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        calls = [stub.ModelInfer.future(_infer_request(x)) for x in xs]
        replies = [c.result(timeout=60) for c in calls]
    for x, reply in zip(xs, replies, strict=True):
        y = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(len(x), 2)
        np.testing.assert_allclose(y, tiny_expected(x, seed=1), rtol=1e-5, atol=1e-6)
    after = _batches(served)
    batches, rows = after[0] - before[0], after[1] - before[1]
    assert rows == len(xs)  # the histogram counts requests per batch
    assert batches < len(xs), "gRPC calls in flight together must share batches"


def _slow_server(home: Path, tmp_path: Path, latency_ms: float) -> RunningServer:
    """A server for `tiny` whose engine takes ``latency_ms`` per batch."""
    from shipyard.runtime import FakeRuntime

    settings = server_settings(home)
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp_path, "tiny")
    reg.close()
    return start_server(
        ["tiny"], settings, runtime_factory=lambda rs: FakeRuntime(latency_ms=latency_ms)
    )


def test_grpc_client_deadline_gives_deadline_exceeded(home: Path, tmp_path: Path) -> None:
    import grpc

    from shipyard.server.grpc import inference_pb2 as pb
    from shipyard.server.grpc import inference_pb2_grpc as pb_grpc

    server = _slow_server(home, tmp_path, latency_ms=300)
    try:
        with grpc.insecure_channel(server.grpc) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            slow = stub.ModelInfer.future(_infer_request(np.ones((1, 4))))
            time.sleep(0.05)  # its batch is running and holds the engine
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(_infer_request(np.ones((1, 4))), timeout=0.1)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            slow.result(timeout=10)
            assert stub.ServerLive(pb.ServerLiveRequest()).live
        # the server saw the deadline pass and refused to run it (not only the client gave up)
        import httpx

        end = time.monotonic() + 5
        while time.monotonic() < end:
            text = httpx.get(server.http + "/metrics").text
            counted = [
                line
                for line in text.splitlines()
                if line.startswith("shipyard_errors_total")
                and 'code="deadline-exceeded"' in line
                and 'protocol="grpc"' in line
            ]
            if counted:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("no gRPC deadline-exceeded error counted by the server")
    finally:
        stop_server(server)


def test_grpc_stop_drains_in_flight_calls(home: Path, tmp_path: Path) -> None:
    import grpc

    from shipyard.server.grpc import inference_pb2_grpc as pb_grpc

    server = _slow_server(home, tmp_path, latency_ms=200)
    channel = grpc.insecure_channel(server.grpc)
    try:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        calls = [stub.ModelInfer.future(_infer_request(np.ones((1, 4)))) for _ in range(4)]
        time.sleep(0.05)  # the calls are in flight
        stop_server(server)  # returns once the server has stopped
        for call in calls:
            assert call.result(timeout=10).model_name == "tiny"
    finally:
        channel.close()

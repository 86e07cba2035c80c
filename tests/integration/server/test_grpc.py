"""Open Inference Protocol over gRPC with the unmodified tritonclient.grpc."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import RunningServer, tiny_expected


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

"""The pure parts of `shipyard tune`: the search plan, the request body, the load summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from shipyard.errors import InvalidData
from shipyard.spec import DType, Signature, TensorSpec
from shipyard.workflows._loadgen import percentile, summarize
from shipyard.workflows.tune import (
    Candidate,
    plan_batch_sizes,
    plan_threads,
    plan_waits,
    sample_request,
)


@pytest.mark.parametrize(
    ("cores", "expected"),
    [(1, [0, 1]), (2, [0, 1, 2]), (6, [0, 1, 2, 4, 6]), (8, [0, 1, 2, 4, 8])],
)
def test_threads_are_ort_choice_then_powers_of_two_up_to_the_cores(
    cores: int, expected: list[int]
) -> None:
    assert plan_threads(cores) == expected


@pytest.mark.parametrize(
    ("concurrency", "expected"),
    [(1, [1]), (2, [1, 2]), (8, [1, 2, 4, 8]), (12, [1, 2, 4, 8, 12])],
)
def test_batch_sizes_never_exceed_the_concurrency(concurrency: int, expected: list[int]) -> None:
    assert plan_batch_sizes(concurrency) == expected


def test_batch_sizes_are_capped() -> None:
    assert plan_batch_sizes(10_000, limit=64)[-1] == 64


def test_waits_use_at_most_a_quarter_of_the_slo() -> None:
    assert plan_waits(1.0) == []
    assert plan_waits(4.0) == [0.5, 1.0]
    assert max(plan_waits(1000.0)) <= 250


def test_candidate_serving_has_the_per_model_setting_layers() -> None:
    assert Candidate(2, 8, 1.5).serving() == {
        "batching": {"max_batch_size": 8, "max_wait_ms": 1.5},
        "runtime": {"intra_op_threads": 2},
    }


SIG = Signature(
    inputs=(
        TensorSpec(name="x", dtype=DType.FP32, shape=(None, 4)),
        TensorSpec(name="ids", dtype=DType.INT64, shape=(None, 3)),
        TensorSpec(name="text", dtype=DType.BYTES, shape=(None,)),
    ),
    outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 2)),),
)


def test_sample_request_is_one_row_made_up_from_the_signature() -> None:
    body = json.loads(sample_request(SIG))
    by_name = {i["name"]: i for i in body["inputs"]}
    assert by_name["x"]["shape"] == [1, 4] and by_name["x"]["datatype"] == "FP32"
    assert len(by_name["x"]["data"]) == 4
    assert by_name["ids"]["data"] == [0, 0, 0]
    assert by_name["text"]["data"] == [""]


def test_sample_request_takes_the_first_row_of_a_given_sample() -> None:
    sig = Signature(inputs=SIG.inputs[:1], outputs=SIG.outputs)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    body = json.loads(sample_request(sig, x))
    assert body["inputs"][0]["shape"] == [1, 4]
    assert body["inputs"][0]["data"] == [0.0, 1.0, 2.0, 3.0]


def test_sample_request_refuses_a_sample_missing_an_input() -> None:
    with pytest.raises(InvalidData, match="'ids'"):
        sample_request(SIG, {"x": np.zeros((1, 4)), "text": np.array(["a"])})
    with pytest.raises(InvalidData, match="mapping"):
        sample_request(SIG, np.zeros((1, 4)))


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_summary_reports_rate_and_percentiles_in_ms() -> None:
    s = summarize([0.001] * 99 + [0.1], errors=2, elapsed_s=2.0)
    assert s["requests"] == 100 and s["errors"] == 2
    assert s["rps"] == 50
    assert s["p50_ms"] == pytest.approx(1.0)
    assert s["p99_ms"] == pytest.approx(1.0)
    assert s["max_ms"] == pytest.approx(100.0)

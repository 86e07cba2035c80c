from __future__ import annotations

import pytest

from shipyard.config import RuntimeSettings
from shipyard.runtime import FakeRuntime, OnnxRuntime, Runtime
from shipyard.testing import check_runtime


def test_onnx_runtime_passes_the_conformance_suite() -> None:
    check_runtime(lambda: OnnxRuntime(RuntimeSettings(intra_op_threads=1)))


def test_fake_runtime_passes_the_conformance_suite() -> None:
    check_runtime(FakeRuntime)


@pytest.mark.parametrize("factory", [OnnxRuntime, FakeRuntime])
def test_shipped_runtimes_satisfy_the_runtime_protocol(factory: type) -> None:
    assert isinstance(factory(), Runtime)


class _NeverReady(FakeRuntime):
    @property
    def ready(self) -> bool:
        return False


class _AcceptsAnything(FakeRuntime):
    def predict(self, inputs, outputs=None):  # type: ignore[no-untyped-def]
        import numpy as np

        return {"y": np.zeros((3, 2), np.float32)}


@pytest.mark.parametrize(
    ("factory", "rule"),
    [(_NeverReady, "ready after load"), (_AcceptsAnything, "predict\\(\\) before load")],
)
def test_conformance_suite_names_the_rule_a_broken_runtime_breaks(factory: type, rule: str) -> None:
    with pytest.raises(AssertionError, match=rule):
        check_runtime(factory)

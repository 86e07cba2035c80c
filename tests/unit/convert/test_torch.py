from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shipyard.convert import convert, detect_framework
from shipyard.errors import InvalidData, InvalidInputError
from shipyard.spec import TaskType


class TinyClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinySequence(nn.Module):
    """(N, T, 3) -> (N, T, 2) plus a pooled (N, 2) summary."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seq, _ = self.gru(x)
        out = self.head(seq)
        return out, out.mean(dim=1)


@pytest.fixture
def classifier(seed):
    torch.manual_seed(seed)
    return TinyClassifier()


def test_module_classifier_with_dynamic_batch(classifier, workdir, ort_run, seed):
    sample = torch.randn(5, 4)
    classifier.train()

    result = convert(
        classifier,
        workdir=workdir,
        sample_input=sample,
        task="classification",
        class_labels=["a", "b", "c"],
    )

    nv = result.new_version
    assert nv.framework == "torch" and nv.framework_version == str(torch.__version__)
    assert nv.opset == 17
    assert [(i.name, i.shape) for i in nv.signature.inputs] == [("input", (None, 4))]
    assert [(o.name, o.shape) for o in nv.signature.outputs] == [("output", (None, 3))]
    assert nv.task.task is TaskType.CLASSIFICATION
    assert nv.task.scores_output == "output" and nv.task.class_labels == ("a", "b", "c")
    assert nv.parity.passed and nv.parity.n_samples == 10  # the batch is doubled
    assert classifier.training  # the caller's mode is restored

    held_out = np.random.default_rng(seed).normal(size=(7, 4)).astype(np.float32)
    got = ort_run(result.onnx_path, {"input": held_out})["output"]
    classifier.eval()
    with torch.no_grad():
        expected = classifier(torch.from_numpy(held_out)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))


def test_task_defaults_to_other(classifier, workdir):
    result = convert(classifier, workdir=workdir, sample_input=np.zeros((2, 4), np.float64))
    assert result.new_version.task.task is TaskType.OTHER
    assert result.new_version.task.scores_output is None


def test_sequence_axis_and_two_outputs(workdir, ort_run, seed):
    torch.manual_seed(seed)
    model = TinySequence()
    sample = np.random.default_rng(seed).normal(size=(2, 6, 3)).astype(np.float32)

    result = convert(
        model,
        workdir=workdir,
        sample_input=sample,
        task="regression",
        dynamic_axes={"input": {1: "T"}, "output_0": {1: "T"}},
    )

    nv = result.new_version
    assert [(i.name, i.shape) for i in nv.signature.inputs] == [("input", (None, None, 3))]
    assert [(o.name, o.shape) for o in nv.signature.outputs] == [
        ("output_0", (None, None, 2)),
        ("output_1", (None, 2)),
    ]
    assert nv.task.scores_output == "output_0"
    longer = np.random.default_rng(seed + 1).normal(size=(3, 11, 3)).astype(np.float32)
    got = ort_run(result.onnx_path, {"input": longer})
    with torch.no_grad():
        expected = model(torch.from_numpy(longer))
    np.testing.assert_allclose(got["output_0"], expected[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["output_1"], expected[1].numpy(), atol=1e-5)


def test_torchscript_file(classifier, tmp_path, workdir, ort_run):
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(classifier), str(path))
    assert detect_framework(path) == "torchscript"
    sample = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)

    result = convert(path, workdir=workdir, sample_input=sample)

    assert result.new_version.framework == "torchscript"
    assert result.source_path == path
    assert result.new_version.parity.passed
    got = ort_run(result.onnx_path, {"input": sample})["output"]
    with torch.no_grad():
        np.testing.assert_allclose(got, classifier(torch.from_numpy(sample)).numpy(), atol=1e-5)


def test_torch_needs_a_sample_input(classifier, workdir):
    with pytest.raises(InvalidInputError, match="sample input"):
        convert(classifier, workdir=workdir)


def test_unknown_dynamic_axis_name_is_rejected(classifier, workdir):
    with pytest.raises(InvalidInputError, match="dynamic_axes"):
        convert(
            classifier,
            workdir=workdir,
            sample_input=np.zeros((2, 4)),
            dynamic_axes={"nope": {1: "T"}},
        )


def test_corrupt_torchscript_file_is_invalid_data(tmp_path, workdir):
    path = tmp_path / "model.pt"
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/code/__torch__.py", "garbage")
        zf.writestr("model/constants.pkl", b"garbage")
    with pytest.raises(InvalidData, match="TorchScript"):
        convert(path, workdir=workdir, sample_input=np.zeros((2, 4), np.float32))


class Drifting(nn.Module):
    """Adds how often it was called: the trace freezes the count, so parity must fail."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * 2.0 + float(self.calls)


def test_traced_model_that_drifts_fails_parity(workdir):
    from shipyard.errors import ParityCheckFailed

    sample = np.ones((2, 3), np.float32)
    with pytest.raises(ParityCheckFailed) as info:
        convert(Drifting(), workdir=workdir, sample_input=sample)
    assert info.value.details["parity"]["worst"][0]["output"] == "output"

    result = convert(Drifting(), workdir=workdir, sample_input=sample, allow_mismatch=True)
    assert not result.new_version.parity.passed
    assert result.new_version.parity.max_abs_error >= 1.0

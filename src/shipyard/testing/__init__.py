"""Helpers for tests of shipyard and of third-party runtimes: tiny models built in code.

Nothing in ``src/`` imports this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.testing.conformance import check_runtime, make_tiny_manifest

__all__ = [
    "check_runtime",
    "make_cifar_cnn",
    "make_tiny_manifest",
    "make_tiny_onnx_model",
    "save_tiny_onnx_model",
]


def make_tiny_onnx_model(
    n_features: int = 4, n_outputs: int = 2, *, seed: int = 0, opset: int = 17
) -> Any:
    """``y = x @ W + b`` as an ``onnx.ModelProto`` with a dynamic batch axis.

    Input ``x`` is FP32 (N, n_features); output ``y`` is FP32 (N, n_outputs).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n_features, n_outputs)).astype(np.float32)
    b = rng.normal(size=(n_outputs,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_outputs])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def save_tiny_onnx_model(path: Path, **kwargs: Any) -> Path:
    """Write :func:`make_tiny_onnx_model` to ``path`` and return it."""
    import onnx

    onnx.save(make_tiny_onnx_model(**kwargs), str(path))
    return path


def make_cifar_cnn(
    channels: tuple[int, int] = (32, 64),
    hidden: int = 64,
    classes: int = 10,
    size: int = 32,
    *,
    seed: int = 0,
) -> Any:
    """The CIFAR-10-style CNN of the issues and benchmarks, as a PyTorch module.

    Conv(3→c1)-ReLU-pool, Conv(c1→c2)-ReLU-pool, flatten, Dense(hidden)-ReLU,
    Dense(classes); input (N, 3, size, size). The defaults are the server benchmark's
    model M; weights are random (``seed``), the module is in train mode.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(3, c1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (size // 4) ** 2, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )

"""Inference engine adapters behind one protocol: load, predict, unload.

Imports: spec, config, errors (and registry in ``pool.py`` only).
"""

from __future__ import annotations

from shipyard.runtime._validation import InputChecker
from shipyard.runtime.base import Runtime, RuntimeState
from shipyard.runtime.fake import FakeRuntime
from shipyard.runtime.onnx import OnnxRuntime

__all__ = [
    "FakeRuntime",
    "InputChecker",
    "OnnxRuntime",
    "Runtime",
    "RuntimeState",
]

"""Dynamic batching: a bounded per-model queue and the tensor stacking it needs."""

from __future__ import annotations

from shipyard.batching.batcher import DynamicBatcher
from shipyard.batching.tensors import shape_key, split, stack

__all__ = ["DynamicBatcher", "shape_key", "split", "stack"]

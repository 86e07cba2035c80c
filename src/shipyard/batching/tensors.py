"""Stack and split dicts of arrays along axis 0, and the key that says which may be stacked.

Imports: numpy only.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["shape_key", "split", "stack"]

Arrays = Mapping[str, npt.NDArray[Any]]


def shape_key(tensors: Arrays) -> Hashable:
    """Requests with equal keys can be stacked: same names, dtypes and trailing dims."""
    return tuple((name, arr.dtype.str, arr.shape[1:]) for name, arr in tensors.items())


def stack(items: Sequence[Arrays]) -> tuple[dict[str, npt.NDArray[Any]], list[int]]:
    """Concatenate each named array along axis 0; returns the batch and the row offsets.

    ``offsets[i]:offsets[i + 1]`` are the rows of item ``i``. Items must share a
    :func:`shape_key`.
    """
    first = items[0]
    names = list(first)
    rows = [len(item[names[0]]) for item in items]
    offsets = [0]
    for n in rows:
        offsets.append(offsets[-1] + n)
    merged = {name: np.concatenate([item[name] for item in items], axis=0) for name in names}
    return merged, offsets


def split(outputs: Arrays, offsets: Sequence[int]) -> list[dict[str, npt.NDArray[Any]]]:
    """Cut batch outputs back into per-item dicts (views, no copies)."""
    return [
        {name: arr[offsets[i] : offsets[i + 1]] for name, arr in outputs.items()}
        for i in range(len(offsets) - 1)
    ]

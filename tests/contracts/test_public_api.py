"""Each public package's ``__all__`` is sorted, complete, and every name resolves."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "shipyard",
    "shipyard.errors",
    "shipyard.spec",
    "shipyard.config",
    "shipyard.api",
    "shipyard.registry",
    "shipyard.convert",
    "shipyard.runtime",
    "shipyard.metrics",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    names = list(module.__all__)
    assert names == sorted(names, key=str), f"{name}.__all__ is not sorted"
    assert len(names) == len(set(names))
    for attr in names:
        assert getattr(module, attr) is not None, f"{name}.{attr} does not resolve"

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


def _isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions."""
    if name.isupper() or (name.upper() == name and "_" in name):
        return (0, name)
    return (1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    names = list(module.__all__)
    assert names == sorted(names, key=_isort_key), f"{name}.__all__ is not sorted"
    assert len(names) == len(set(names))
    for attr in names:
        assert getattr(module, attr) is not None, f"{name}.{attr} does not resolve"

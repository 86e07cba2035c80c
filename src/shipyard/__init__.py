"""Shipyard: take a trained model to a fast, secure, monitored production service.

Importing ``shipyard`` is cheap: the public names below are loaded on first use (numpy,
onnxruntime and the frameworks are imported only by the functions that need them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shipyard._utils.version import __version__

if TYPE_CHECKING:
    from shipyard.api import (
        evaluate,
        load_sample_input,
        monitor_set_reference,
        open_registry,
        predict,
        register,
    )
    from shipyard.config import Settings, load_settings
    from shipyard.errors import ShipyardError
    from shipyard.spec import ModelRef

__all__ = [
    "ModelRef",
    "Settings",
    "ShipyardError",
    "__version__",
    "evaluate",
    "load_sample_input",
    "load_settings",
    "monitor_set_reference",
    "open_registry",
    "predict",
    "register",
]

_LAZY: dict[str, str] = {
    "ModelRef": "shipyard.spec",
    "Settings": "shipyard.config",
    "ShipyardError": "shipyard.errors",
    "evaluate": "shipyard.api",
    "load_sample_input": "shipyard.api",
    "load_settings": "shipyard.config",
    "monitor_set_reference": "shipyard.api",
    "open_registry": "shipyard.api",
    "predict": "shipyard.api",
    "register": "shipyard.api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shipyard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

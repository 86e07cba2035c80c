"""Optional-dependency imports that fail with an error naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from shipyard.errors import ConfigError, MissingDependency


def optional_import(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` or raise MissingDependency naming ``shipyard[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"This needs the optional package {module.split('.')[0]!r}, which is not installed.",
            hint=f"Install it with: pip install 'shipyard[{extra}]'",
        ) from exc


def import_string(path: str) -> Any:
    """Import ``"pkg.mod:Name"`` and return ``Name``."""
    mod_name, sep, attr = path.partition(":")
    if not sep or not mod_name or not attr:
        raise ConfigError(
            f"An import path must look like 'package.module:Name'. Got {path!r} instead."
        )
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigError(f"Cannot import module {mod_name!r} named in {path!r}.") from exc
    try:
        return getattr(mod, attr)
    except AttributeError as exc:
        raise ConfigError(f"Module {mod_name!r} has no attribute {attr!r}.") from exc

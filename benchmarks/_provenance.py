"""What every benchmark result records: the git sha, the host and package versions.

Benchmarks are scripts (``python benchmarks/<name>/run.py``); each puts this folder on
``sys.path`` and imports from here, so the provenance is written one way everywhere.
"""

from __future__ import annotations

import importlib
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def git_sha() -> str:
    """The short sha of HEAD, or "unknown" outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def host_info() -> dict[str, Any]:
    """CPU model, core count, platform and host name."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
    }


def versions(*packages: str) -> dict[str, str]:
    """Python's version and each package's ``__version__`` (always numpy and onnxruntime)."""
    out = {"python": platform.python_version()}
    for name in ("numpy", "onnxruntime", *packages):
        try:
            out[name] = str(importlib.import_module(name).__version__)
        except ImportError:
            out[name] = "absent"
    return out

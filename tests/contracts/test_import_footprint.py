"""``import shipyard`` and the CLI's --help stay light: no numpy, onnxruntime or web stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("numpy", "onnxruntime", "onnx", "starlette", "uvicorn", "torch", "sklearn", "keras")


@pytest.mark.parametrize(
    "statement",
    [
        "import shipyard",
        "import shipyard.cli.main",
        "from shipyard.cli.main import main; main(['--help'])",
        "from shipyard.cli.main import main; main(['models', '--help'])",
    ],
)
def test_import_does_not_load_heavy_modules(statement: str) -> None:
    code = (
        f"import sys\n{statement}\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    marker = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert marker, proc.stdout[-500:]
    loaded = marker[-1].removeprefix("HEAVY=")
    assert loaded == "", f"{statement!r} loaded {loaded}"

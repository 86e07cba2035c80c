from __future__ import annotations

import subprocess
import sys

import shipyard.registry as registry_pkg


def test_all_is_sorted_and_importable() -> None:
    names = registry_pkg.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(registry_pkg, name) is not None


def test_importing_the_registry_stays_light() -> None:
    code = (
        "import sys, shipyard.registry\n"
        "heavy = [m for m in ('numpy', 'onnx', 'onnxruntime', 'starlette', 'click')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""

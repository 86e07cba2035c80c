"""Real processes: concurrent registration, and SIGKILL at each named step of a register."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.config import Settings
from shipyard.registry import ModelRegistry

REGISTER_SCRIPT = """
import sys
from pathlib import Path
from shipyard.config import load_settings
from shipyard.registry import ModelRegistry
from shipyard.spec import DType, NewVersion, Signature, TensorSpec

home, model, name, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
sig = Signature(
    inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, 4)),),
    outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 2)),),
)
reg = ModelRegistry.open(load_settings({"home": home}))
for _ in range(count):
    mv = reg.register(name, NewVersion(signature=sig, framework="onnx"), {"model.onnx": model})
    print(mv.version, flush=True)
reg.close()
"""


def _run(
    home: Path, model: Path, name: str, count: int, env_extra: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-c", REGISTER_SCRIPT, str(home), str(model), name, str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_processes_registering_one_name_get_distinct_versions(
    home: Path, tiny_onnx: Path, settings: Settings
) -> None:
    ModelRegistry.open(settings).close()  # create the schema first, as a server would
    procs = [_run(home, tiny_onnx, "shared", 10) for _ in range(2)]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outputs.append([int(v) for v in out.split()])
    got = sorted(outputs[0] + outputs[1])
    assert got == list(range(1, 21))
    reg = ModelRegistry.open(settings)
    try:
        assert [v.version for v in reg.list_versions("shared")] == list(range(1, 21))
        assert reg.verify().ok
    finally:
        reg.close()


@pytest.mark.parametrize(
    ("point", "listed_after"),
    [
        ("register.after-blob-write", False),
        ("register.before-metadata-commit", False),
        ("register.after-metadata-commit", True),
    ],
)
def test_sigkill_during_register_leaves_a_consistent_registry(
    home: Path, tiny_onnx: Path, settings: Settings, tmp_path: Path, point: str, listed_after: bool
) -> None:
    reg = ModelRegistry.open(settings)
    from tests.unit.registry.conftest import tiny_new

    reg.register("m", tiny_new(), {"model.onnx": tiny_onnx})
    reg.close()
    marker = tmp_path / "marker"
    changed = tmp_path / "changed.onnx"
    changed.write_bytes(tiny_onnx.read_bytes() + b"\0\0")  # a new blob, so the write really happens
    proc = _run(
        home,
        changed,
        "m",
        1,
        {"SHIPYARD_FAULT_POINT": point, "SHIPYARD_FAULT_MARKER": str(marker)},
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    assert marker.read_text() == point, "the fault point was never reached"

    reg = ModelRegistry.open(settings)
    try:
        versions = [v.version for v in reg.list_versions("m")]
        assert versions == ([1, 2] if listed_after else [1])
        for mv in reg.list_versions("m"):
            for role in mv.manifest.files:
                assert reg.read_artifact(mv, role)  # re-hashed: raises on any mismatch
        assert reg.verify().ok
        assert reg.get("m").version == versions[-1]
        # and the registry keeps working: the next register gets the next free number
        from tests.unit.registry.conftest import tiny_new

        assert reg.register("m", tiny_new(), {"model.onnx": tiny_onnx}).version == versions[-1] + 1
    finally:
        reg.close()

"""Real processes: concurrent registration, and SIGKILL at each named step of a register."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.config import Settings
from shipyard.registry import ModelRegistry
from shipyard.spec import DType, NewVersion, Signature, TensorSpec

REGISTER_SCRIPT = """
import sys
import time
from pathlib import Path
from shipyard.config import load_settings
from shipyard.registry import ModelRegistry
from shipyard.spec import DType, NewVersion, Signature, TensorSpec

model, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
go = Path(sys.argv[4]) if len(sys.argv) > 4 else None
sig = Signature(
    inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, 4)),),
    outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 2)),),
)
if go is not None:  # start together: imports done, then wait for the starting gun
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
with ModelRegistry.open(load_settings()) as reg:  # SHIPYARD_HOME comes from the env
    for _ in range(count):
        mv = reg.register(name, NewVersion(signature=sig, framework="onnx"), {"model.onnx": model})
        print(mv.version, flush=True)
"""

FAULT_POINTS = [
    "register.after-blob-write",
    "register.before-metadata-commit",
    "register.after-metadata-commit",
]


@pytest.fixture
def other_onnx(tmp_path: Path, tiny_onnx: Path) -> Path:
    """A model file with content no other version has (so a register writes a new blob)."""
    path = tmp_path / "other.onnx"
    path.write_bytes(tiny_onnx.read_bytes() + b"\0\0")
    return path


def _new() -> NewVersion:
    sig = Signature(
        inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, 4)),),
        outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 2)),),
    )
    return NewVersion(signature=sig, framework="onnx")


def _spawn(
    model: Path,
    name: str,
    count: int,
    env_extra: dict[str, str] | None = None,
    go: Path | None = None,
) -> subprocess.Popen[str]:
    # os.environ carries SHIPYARD_HOME, set per test by the autouse clean_env fixture
    env = {**os.environ, **(env_extra or {})}
    args = [sys.executable, "-c", REGISTER_SCRIPT, str(model), name, str(count)]
    return subprocess.Popen(
        [*args, *([str(go)] if go else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _assert_consistent(reg: ModelRegistry) -> None:
    """Every listed version loads, and every file reads back with its recorded sha256."""
    for summary in reg.list_models():
        for mv in reg.list_versions(summary.name):
            for role, entry in mv.manifest.files.items():
                data = reg.read_artifact(mv, role)  # re-hashed: raises on any mismatch
                assert hashlib.sha256(data).hexdigest() == entry.sha256
    assert reg.verify().ok


def test_two_processes_registering_one_name_get_distinct_versions(
    tiny_onnx: Path, settings: Settings, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    procs = [_spawn(tiny_onnx, "shared", 10, go=go) for _ in range(2)]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    go.touch()  # no registry yet: both processes race to create the schema as well
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outputs.append([int(v) for v in out.split()])
    assert all(len(o) == 10 and o == sorted(o) for o in outputs)
    assert sorted(outputs[0] + outputs[1]) == list(range(1, 21))
    with ModelRegistry.open(settings) as reg:
        assert [v.version for v in reg.list_versions("shared")] == list(range(1, 21))
        assert reg.get("shared").version == 20
        assert len(reg.alias_history("shared", "default")) == 20
        _assert_consistent(reg)


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_sigkill_during_register_leaves_a_consistent_registry(
    tiny_onnx: Path, other_onnx: Path, settings: Settings, tmp_path: Path, point: str
) -> None:
    with ModelRegistry.open(settings) as reg:
        reg.register("m", _new(), {"model.onnx": tiny_onnx})
    marker = tmp_path / "marker"
    # other_onnx is new content, so the killed process really writes a blob
    proc = _spawn(
        other_onnx, "m", 1, {"SHIPYARD_FAULT_POINT": point, "SHIPYARD_FAULT_MARKER": str(marker)}
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    assert marker.read_text() == point, "the fault point was never reached"

    committed = point == "register.after-metadata-commit"
    with ModelRegistry.open(settings) as reg:
        assert [s.name for s in reg.list_models()] == ["m"]
        versions = [v.version for v in reg.list_versions("m")]
        assert versions == ([1, 2] if committed else [1])
        assert reg.get("m").version == versions[-1]
        _assert_consistent(reg)
        if committed:
            assert reg.read_artifact("m:2") == other_onnx.read_bytes()
        # an orphan blob of the killed register is reclaimable; nothing referenced is lost
        reg.gc(grace_s=0)
        _assert_consistent(reg)
        # and the registry keeps working: the next register gets the next free number
        assert reg.register("m", _new(), {"model.onnx": tiny_onnx}).version == versions[-1] + 1

"""Attack cases: names, refs, roles, aliases and blob addresses never reach outside the store.

Archive members (``..``, absolute paths, links, devices) are covered in
``test_registry_archive.py``; ONNX external data in ``tests/unit/convert/test_onnx_file.py``
(at conversion) and ``tests/unit/runtime/test_load_safety.py`` (at load).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shipyard.errors import ArtifactCorrupted, InvalidModelRef, InvalidName
from shipyard.registry import LocalArtifactStore, ModelRegistry
from tests.unit.registry.conftest import tiny_new

TRAVERSALS = ["../evil", "..", "/etc/passwd", "a/../../b", "a\\..\\b", "C:/x", "~root"]


def _outside(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.parent.iterdir()}


@pytest.mark.parametrize("name", TRAVERSALS)
def test_attack_model_name_path_traversal(
    registry: ModelRegistry, tiny_onnx: Path, tmp_path: Path, name: str
) -> None:
    before = _outside(tmp_path)
    with pytest.raises(InvalidName):
        registry.register(name, tiny_new(), {"model.onnx": tiny_onnx})
    assert registry.list_models() == []
    assert _outside(tmp_path) == before


@pytest.mark.parametrize("role", ["../evil", "/abs", "files/../../x"])
def test_attack_file_role_path_traversal(
    registry: ModelRegistry, tiny_onnx: Path, role: str
) -> None:
    with pytest.raises(InvalidName):
        registry.register("iris", tiny_new(), {"model.onnx": tiny_onnx, role: tiny_onnx})
    assert registry.list_models() == []


@pytest.mark.parametrize("alias", ["../prod", "/prod", "a/b"])
def test_attack_alias_path_traversal(registry: ModelRegistry, tiny_onnx: Path, alias: str) -> None:
    registry.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
    with pytest.raises(InvalidName):
        registry.promote("iris:1", alias)
    assert registry.get("iris:1").aliases == ("default",)


@pytest.mark.parametrize("ref", ["../../etc/passwd", "/etc/passwd", "iris@../x", "iris:../1"])
def test_attack_ref_path_traversal(registry: ModelRegistry, ref: str) -> None:
    with pytest.raises((InvalidName, InvalidModelRef)):
        registry.get(ref)


@pytest.mark.parametrize(
    "address", ["../../../etc/passwd", "/etc/passwd", "ab/../../x", "A" * 64, "0" * 63]
)
def test_attack_blob_address_traversal(tmp_path: Path, address: str) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    for op in (store.read_bytes, store.delete, store.exists, store.local_path):
        with pytest.raises(ArtifactCorrupted, match="64 lower-case hex"):
            op(address)
    assert victim.read_bytes() == b"keep me"


def test_attack_import_under_a_traversal_name(
    registry: ModelRegistry, tiny_onnx: Path, tmp_path: Path
) -> None:
    registry.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
    archive = registry.export_version("iris:1", tmp_path / "a.tar.gz")
    with pytest.raises(InvalidName):
        registry.import_archive(archive, name="../evil")
    assert [m.name for m in registry.list_models()] == ["iris"]


def test_attack_blob_replaced_by_symlink_outside_is_refused(
    registry: ModelRegistry, tiny_onnx: Path, tmp_path: Path
) -> None:
    mv = registry.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
    blob = registry.store.local_path(mv.manifest.files["model.onnx"].sha256)
    assert blob is not None
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0")
    os.chmod(blob, 0o644)
    blob.unlink()
    blob.symlink_to(secret)
    with pytest.raises(ArtifactCorrupted, match="changed on disk"):
        registry.read_artifact(mv)
    with pytest.raises(ArtifactCorrupted):
        registry.artifact_path(mv)
    report = registry.verify()
    assert [m["role"] for m in report.mismatches] == ["model.onnx"]
    assert secret.read_bytes() == b"root:x:0:0"

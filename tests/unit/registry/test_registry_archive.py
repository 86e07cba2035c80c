"""export_version / import_archive: one .tar.gz per version, checked member by member."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.config import Settings
from shipyard.errors import (
    ArtifactCorrupted,
    ConfigError,
    DataNotFound,
    InvalidData,
    ModelNotFound,
    UnsafeArtifact,
)
from shipyard.registry import ModelRegistry
from shipyard.spec import Lineage

from .conftest import tiny_new


@pytest.fixture
def fresh(settings: Settings, tmp_path: Path) -> Iterator[ModelRegistry]:
    """A second, empty registry in another home."""
    reg = ModelRegistry.open(settings.model_copy(update={"home": tmp_path / "other"}))
    yield reg
    reg.close()


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def _write_archive(dst: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dst


@pytest.fixture
def archive(
    registry: ModelRegistry, files: dict[str, Path], source_file: Path, tmp_path: Path
) -> Path:
    """An export of ``m:1`` (model.onnx + source, metrics, tags, description)."""
    registry.register(
        "m",
        tiny_new(),
        {**files, "source": source_file},
        metrics={"acc": 0.5},
        description="d",
        tags={"team": "a"},
    )
    return registry.export_version("m", tmp_path / "m.tar.gz")


def test_export_writes_one_archive_with_manifest_metadata_and_files(
    archive: Path, files: dict[str, Path], source_file: Path
) -> None:
    members = _members(archive)
    assert sorted(members) == [
        "files/model.onnx",
        "files/source",
        "manifest.json",
        "metadata.json",
    ]
    assert members["files/model.onnx"] == files["model.onnx"].read_bytes()
    assert members["files/source"] == source_file.read_bytes()
    assert json.loads(members["metadata.json"])["metrics"] == {"acc": 0.5}
    assert json.loads(members["manifest.json"])["name"] == "m"


def test_export_into_a_folder_names_the_archive(
    registry: ModelRegistry, files: dict[str, Path], tmp_path: Path
) -> None:
    registry.register("m", tiny_new(), files)
    out = tmp_path / "exports"
    out.mkdir()
    assert registry.export_version("m:1", out) == out / "m-1.tar.gz"


def test_export_refuses_a_corrupted_file_and_leaves_no_archive(
    registry: ModelRegistry, files: dict[str, Path], tmp_path: Path
) -> None:
    mv = registry.register("m", tiny_new(), files)
    blob = registry.store.local_path(mv.manifest.files["model.onnx"].sha256)
    assert blob is not None
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupted):
        registry.export_version("m", tmp_path / "bad.tar.gz")
    assert not (tmp_path / "bad.tar.gz").exists()


def test_export_import_round_trip_on_a_fresh_registry(
    archive: Path, fresh: ModelRegistry, files: dict[str, Path], source_file: Path
) -> None:
    mv = fresh.import_archive(archive, actor="alice")
    assert mv.ref == "m:1"
    assert (mv.metrics, mv.description) == ({"acc": 0.5}, "d")
    assert mv.tags["team"] == "a"
    assert mv.tags["imported_from"] == "m:1"
    manifest_sha = hashlib.sha256(_members(archive)["manifest.json"]).hexdigest()
    assert mv.tags["imported_manifest_sha256"] == manifest_sha
    assert fresh.read_artifact(mv) == files["model.onnx"].read_bytes()
    assert fresh.read_artifact(mv, "source") == source_file.read_bytes()
    assert mv.manifest.files["model.onnx"].filename == files["model.onnx"].name
    assert fresh.get("m").version == 1
    assert fresh.verify().ok
    # importing again gives the next version; under another name, that name's next one
    assert fresh.import_archive(archive).version == 2
    assert fresh.import_archive(archive, name="copy").ref == "copy:1"


def test_import_keeps_lineage(
    registry: ModelRegistry, files: dict[str, Path], fresh: ModelRegistry, tmp_path: Path
) -> None:
    registry.register("m", tiny_new(), files)
    lineage = Lineage(parent_version=1, transformation="int8", parameters={"per_channel": True})
    registry.register("m", tiny_new(lineage), files)
    out = registry.export_version("m:2", tmp_path / "m2.tar.gz")
    mv = fresh.import_archive(out)
    assert mv.manifest.lineage == lineage
    assert mv.tags["imported_from"] == "m:2"
    assert mv.aliases == ()  # a derived version does not move default on import either


def test_import_refuses_a_tampered_archive(
    archive: Path, registry: ModelRegistry, tmp_path: Path
) -> None:
    members = _members(archive)
    bad = _write_archive(tmp_path / "bad.tar.gz", {**members, "files/model.onnx": b"not it"})
    with pytest.raises(ArtifactCorrupted, match="sha256") as info:
        registry.import_archive(bad, name="copy")
    assert "export it again" in (info.value.hint or "")
    with pytest.raises(ModelNotFound):
        registry.get("copy")


def test_import_refuses_missing_and_unlisted_files(
    archive: Path, registry: ModelRegistry, tmp_path: Path
) -> None:
    members = _members(archive)
    missing = {k: v for k, v in members.items() if k != "files/source"}
    with pytest.raises(InvalidData, match="missing \\['source'\\]"):
        registry.import_archive(_write_archive(tmp_path / "a.tar.gz", missing), name="copy")
    extra = {**members, "files/extra": b"x"}
    with pytest.raises(InvalidData, match="unlisted \\['extra'\\]"):
        registry.import_archive(_write_archive(tmp_path / "b.tar.gz", extra), name="copy")
    no_manifest = {k: v for k, v in members.items() if k != "manifest.json"}
    with pytest.raises(InvalidData, match=r"manifest\.json"):
        registry.import_archive(_write_archive(tmp_path / "c.tar.gz", no_manifest), name="copy")


def test_import_refuses_duplicate_members(
    archive: Path, registry: ModelRegistry, tmp_path: Path
) -> None:
    members = _members(archive)
    dst = tmp_path / "dup.tar.gz"
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in [*members.items(), ("files/model.onnx", b"evil twin")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UnsafeArtifact, match="twice"):
        registry.import_archive(dst, name="copy")


@pytest.mark.parametrize(
    "member", ["../evil", "/etc/evil", "files/../../evil", "other.txt", "files/a/b", "C:/x"]
)
def test_import_refuses_unsafe_member_paths(
    registry: ModelRegistry, tmp_path: Path, member: str
) -> None:
    bad = _write_archive(tmp_path / "bad.tar.gz", {member: b"abc"})
    with pytest.raises(UnsafeArtifact):
        registry.import_archive(bad)
    assert not (tmp_path.parent / "evil").exists()
    assert registry.list_models() == []


@pytest.mark.parametrize(
    ("kind", "linkname"),
    [(tarfile.SYMTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "manifest.json"), (tarfile.CHRTYPE, "")],
)
def test_import_refuses_links_and_devices(
    registry: ModelRegistry, tmp_path: Path, kind: bytes, linkname: str
) -> None:
    bad = tmp_path / "link.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("files/model.onnx")
        info.type = kind
        info.linkname = linkname
        tar.addfile(info)
    with pytest.raises(UnsafeArtifact, match="regular files"):
        registry.import_archive(bad)


def test_import_of_a_missing_or_foreign_file_is_a_clear_error(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    with pytest.raises(DataNotFound, match="must exist"):
        registry.import_archive(tmp_path / "nope.tar.gz")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not a tar file at all" * 10)
    with pytest.raises(InvalidData, match=r"tar\.gz"):
        registry.import_archive(junk)


def test_import_refuses_bad_metadata_and_future_manifests(
    archive: Path, registry: ModelRegistry, tmp_path: Path
) -> None:
    members = _members(archive)
    bad_meta = {**members, "metadata.json": b"[1]"}
    with pytest.raises(InvalidData, match="JSON object"):
        registry.import_archive(_write_archive(tmp_path / "a.tar.gz", bad_meta), name="copy")
    doc = json.loads(members["manifest.json"])
    doc["schema_version"] = 99
    future = {**members, "manifest.json": json.dumps(doc).encode()}
    with pytest.raises(ConfigError, match="schema_version"):
        registry.import_archive(_write_archive(tmp_path / "b.tar.gz", future), name="copy")

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from shipyard.config import Settings
from shipyard.errors import (
    AliasInUse,
    AliasNotFound,
    ArtifactCorrupted,
    ConfigError,
    DataNotFound,
    InvalidInputError,
    InvalidName,
    ModelNotFound,
    UnsafeArtifact,
    VersionNotFound,
)
from shipyard.registry import ModelRegistry
from shipyard.registry import metadata as md
from shipyard.spec import Lineage

from .conftest import tiny_new


def test_register_assigns_increasing_versions_and_moves_default(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    v1 = registry.register("m", tiny_new(), files)
    v2 = registry.register("m", tiny_new(), files)
    assert (v1.version, v2.version) == (1, 2)
    assert registry.get("m").version == 2
    assert registry.get("m:1").aliases == ()
    assert v2.manifest.files["model.onnx"].sha256 == v1.manifest.files["model.onnx"].sha256


def test_derived_versions_never_move_default(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    registry.register("m", tiny_new(), files)
    derived = registry.register(
        "m", tiny_new(Lineage(parent_version=1, transformation="int8")), files
    )
    assert derived.manifest.lineage.describe() == "int8 of 1"
    assert registry.get("m").version == 1
    moved = registry.register(
        "m", tiny_new(Lineage(parent_version=1, transformation="fp16")), files, move_default=True
    )
    assert registry.get("m").version == moved.version


def test_manifest_records_hashes_times_and_signature(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    import hashlib

    mv = registry.register("m", tiny_new(), {**files, "source": files["model.onnx"]})
    entry = mv.manifest.files["model.onnx"]
    assert entry.sha256 == hashlib.sha256(files["model.onnx"].read_bytes()).hexdigest()
    assert set(mv.manifest.files) == {"model.onnx", "source"}
    assert mv.manifest.signature.inputs[0].shape == (None, 4)
    assert mv.manifest.created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        ("ghost", ModelNotFound),
        ("m:9", VersionNotFound),
        ("m@prod", AliasNotFound),
        ("M", InvalidName),
    ],
)
def test_get_errors_name_the_problem_with_a_hint(
    registry: ModelRegistry, files: dict[str, Path], ref: str, error: type[Exception]
) -> None:
    registry.register("m", tiny_new(), files)
    with pytest.raises(error) as info:
        registry.get(ref)
    if not isinstance(info.value, InvalidName):
        assert info.value.hint  # type: ignore[attr-defined]


def test_register_validates_inputs_before_storing(
    registry: ModelRegistry, tmp_path: Path, files: dict[str, Path]
) -> None:
    with pytest.raises(InvalidName):
        registry.register("../evil", tiny_new(), files)
    with pytest.raises(DataNotFound):
        registry.register("m", tiny_new(), {"model.onnx": tmp_path / "nope.onnx"})
    with pytest.raises(InvalidInputError):
        registry.register("m", tiny_new(), {"weights": files["model.onnx"]})
    assert registry.list_models() == []


def test_promote_rollback_and_history(registry: ModelRegistry, files: dict[str, Path]) -> None:
    for _ in range(3):
        registry.register("m", tiny_new(), files)
    registry.promote("m:1", "prod", actor="alice")
    registry.promote("m:3", "prod", actor="bob")
    assert registry.get("m@prod").version == 3
    assert registry.rollback("m", "prod", actor="carol").version == 1
    events = registry.alias_history("m", "prod")
    assert [(e.old_version, e.new_version, e.actor) for e in events] == [
        (None, 1, "alice"),
        (1, 3, "bob"),
        (3, 1, "carol"),
    ]
    assert [e.reason for e in events] == ["promote", "promote", "rollback"]
    assert registry.rollback("m").version == 2  # default: 1 -> 2 -> 3, back to 2


def test_rollback_without_history_is_alias_not_found(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    registry.register("m", tiny_new(), files)
    registry.promote("m:1", "prod")
    with pytest.raises(AliasNotFound, match="earlier version"):
        registry.rollback("m", "prod")


def test_delete_is_refused_while_an_alias_points_at_it(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    registry.register("m", tiny_new(), files)
    registry.register("m", tiny_new(), files)
    with pytest.raises(AliasInUse, match="default"):
        registry.delete("m:2")
    registry.delete("m:1")
    with pytest.raises(VersionNotFound):
        registry.get("m:1")
    registry.delete("m:2", force=True)
    with pytest.raises(AliasNotFound):
        registry.get("m")
    # numbers are never reused
    assert registry.register("m", tiny_new(), files).version == 3


def test_metadata_changes_are_merged_and_recorded(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    registry.register("m", tiny_new(), files)
    registry.update_metadata("m:1", metrics={"acc": 0.9}, tags={"team": "a"}, actor="alice")
    mv = registry.update_metadata("m:1", metrics={"f1": 0.8}, description="hello", actor="bob")
    assert mv.metrics == {"acc": 0.9, "f1": 0.8}
    assert mv.tags == {"team": "a"}
    assert mv.description == "hello"
    history = registry.metadata_history("m:1")
    assert [(e.field, e.actor) for e in history] == [
        ("metrics", "alice"),
        ("tags", "alice"),
        ("metrics", "bob"),
        ("description", "bob"),
    ]
    assert history[2].old == {"acc": 0.9}


def test_a_flipped_byte_is_detected_at_read_and_by_verify(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    mv = registry.register("m", tiny_new(), files)
    blob = registry.store.local_path(mv.manifest.files["model.onnx"].sha256)
    assert blob is not None
    data = bytearray(blob.read_bytes())
    data[10] ^= 0x01
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupted, match="sha256") as info:
        registry.read_artifact("m")
    assert "verify" in (info.value.hint or "")
    report = registry.verify()
    assert not report.ok
    assert report.mismatches[0]["ref"] == "m:1"
    assert report.mismatches[0]["role"] == "model.onnx"


def test_missing_blob_is_reported(registry: ModelRegistry, files: dict[str, Path]) -> None:
    mv = registry.register("m", tiny_new(), files)
    blob = registry.store.local_path(mv.manifest.files["model.onnx"].sha256)
    assert blob is not None
    blob.unlink()
    with pytest.raises(ArtifactCorrupted, match="missing"):
        registry.read_artifact(mv)
    assert registry.verify().mismatches[0]["got"] == "missing"


def test_gc_removes_only_unreferenced_blobs(
    registry: ModelRegistry, files: dict[str, Path], tmp_path: Path
) -> None:
    keep = registry.register("keep", tiny_new(), files)
    other = tmp_path / "other.onnx"
    other.write_bytes(files["model.onnx"].read_bytes() + b"\0")
    gone = registry.register("gone", tiny_new(), {"model.onnx": other})
    registry.delete("gone:1", force=True)
    assert registry.gc(grace_s=0, dry_run=True).removed
    report = registry.gc(grace_s=0)
    assert gone.manifest.files["model.onnx"].sha256 in report.removed
    assert report.freed_bytes > 0
    assert registry.read_artifact(keep)  # still there and intact
    assert registry.verify().ok
    assert registry.gc(grace_s=0).removed == []


def test_export_import_round_trip_checks_hashes(
    registry: ModelRegistry, files: dict[str, Path], tmp_path: Path, settings: Settings
) -> None:
    registry.register("m", tiny_new(), files, metrics={"acc": 0.5}, description="d")
    archive = registry.export_version("m", tmp_path / "m.tar.gz")
    other = ModelRegistry.open(settings.model_copy(update={"home": tmp_path / "other"}))
    try:
        mv = other.import_archive(archive)
        assert mv.ref == "m:1"
        assert mv.metrics == {"acc": 0.5}
        assert mv.tags["imported_from"] == "m:1"
        assert other.read_artifact(mv) == files["model.onnx"].read_bytes()
    finally:
        other.close()


def _rewrite_archive(src: Path, dst: Path, mutate: dict[str, bytes]) -> None:
    import io

    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        for info in tin.getmembers():
            data = tin.extractfile(info).read()  # type: ignore[union-attr]
            data = mutate.get(info.name, data)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


def test_import_refuses_a_tampered_archive(
    registry: ModelRegistry, files: dict[str, Path], tmp_path: Path
) -> None:
    registry.register("m", tiny_new(), files)
    archive = registry.export_version("m", tmp_path / "m.tar.gz")
    bad = tmp_path / "bad.tar.gz"
    _rewrite_archive(archive, bad, {"files/model.onnx": b"not the model"})
    with pytest.raises(ArtifactCorrupted, match="sha256"):
        registry.import_archive(bad, name="copy")
    with pytest.raises(ModelNotFound):
        registry.get("copy")


@pytest.mark.parametrize("member", ["../evil", "/etc/evil", "files/../../evil", "other.txt"])
def test_import_refuses_unsafe_member_paths(
    registry: ModelRegistry, tmp_path: Path, member: str
) -> None:
    import io

    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(UnsafeArtifact):
        registry.import_archive(bad)
    assert not (tmp_path.parent / "evil").exists()


def test_import_refuses_symlinks(registry: ModelRegistry, tmp_path: Path) -> None:
    bad = tmp_path / "link.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("files/model.onnx")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(UnsafeArtifact, match="regular files"):
        registry.import_archive(bad)


def test_schema_version_is_recorded_and_newer_databases_are_refused(
    registry: ModelRegistry, settings: Settings
) -> None:
    with registry.engine.connect() as conn:
        assert md.read_schema_version(conn) == md.SCHEMA_VERSION
    with registry.engine.begin() as conn:
        conn.execute(
            sa.update(md.schema_info)
            .where(md.schema_info.c.key == "schema_version")
            .values(value="99")
        )
    with pytest.raises(ConfigError, match="schema version"):
        ModelRegistry.open(settings)


def test_migrations_run_from_an_older_schema(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def step(conn: sa.engine.Connection) -> None:
        calls.append(1)
        conn.execute(sa.text("CREATE TABLE extra_v2 (id INTEGER)"))

    monkeypatch.setitem(md.MIGRATIONS, 1, step)
    reg = ModelRegistry.open(settings)  # creates schema 1
    reg.close()
    engine = md.create_engine(settings.metadata_url)
    assert md.migrate(engine, target=2) == 2
    assert calls == [1]
    with engine.connect() as conn:
        assert md.read_schema_version(conn) == 2
        assert sa.inspect(conn).has_table("extra_v2")
    engine.dispose()

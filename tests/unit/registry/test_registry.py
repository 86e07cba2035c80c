from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shipyard.config import Settings
from shipyard.errors import (
    AliasInUse,
    AliasNotFound,
    ArtifactCorrupted,
    DataNotFound,
    InvalidInputError,
    InvalidModelRef,
    InvalidName,
    ModelNotFound,
    VersionNotFound,
)
from shipyard.registry import LocalArtifactStore, ModelRegistry, ModelSummary
from shipyard.spec import Lineage, ModelRef

from .conftest import tiny_new


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- open and register ------------------------------------------------------------------


def test_open_creates_the_home_folders(settings: Settings) -> None:
    assert not settings.home.exists()
    with ModelRegistry.open(settings) as reg:
        assert reg.list_models() == []
    assert (settings.home / "registry.db").is_file()
    assert (settings.store_path / "blobs" / "sha256").is_dir()


def test_register_assigns_increasing_versions_and_moves_default(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    v1 = registry.register("m", tiny_new(), files)
    v2 = registry.register("m", tiny_new(), files)
    assert (v1.version, v2.version) == (1, 2)
    assert (v1.ref, v2.aliases) == ("m:1", ("default",))
    assert registry.get("m").version == 2
    assert registry.get("m:1").aliases == ()
    assert registry.register("other", tiny_new(), files).version == 1  # numbered per model
    # identical content is stored once
    assert v2.manifest.files["model.onnx"].sha256 == v1.manifest.files["model.onnx"].sha256


def test_derived_versions_move_default_only_when_asked(
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
    kept = registry.register("m", tiny_new(), files, move_default=False)
    assert registry.get("m").version == moved.version != kept.version


def test_manifest_records_hashes_sizes_time_and_signature(
    registry: ModelRegistry, files: dict[str, Path], source_file: Path
) -> None:
    mv = registry.register("m", tiny_new(), {**files, "source": source_file}, actor="alice")
    entry = mv.manifest.files["model.onnx"]
    assert entry.sha256 == _sha(files["model.onnx"])
    assert entry.size_bytes == files["model.onnx"].stat().st_size
    assert entry.filename == files["model.onnx"].name
    assert mv.manifest.files["source"].sha256 == _sha(source_file)
    assert (mv.manifest.name, mv.manifest.version) == ("m", 1)
    assert mv.manifest.signature == tiny_new().signature
    assert mv.manifest.created_at.tzinfo is not None
    assert mv.manifest.created_at.utcoffset() == UTC.utcoffset(None)
    assert registry.read_artifact(mv, "source") == source_file.read_bytes()


def test_register_stores_initial_metadata(registry: ModelRegistry, files: dict[str, Path]) -> None:
    mv = registry.register(
        "m", tiny_new(), files, metrics={"acc": 0.9}, description="first", tags={"team": "a"}
    )
    assert (mv.metrics, mv.description, mv.tags, mv.serving) == (
        {"acc": 0.9},
        "first",
        {"team": "a"},
        {},
    )


@pytest.mark.parametrize("name", ["../evil", "Upper", "", "a/b", "x" * 65, "-lead", "a..b"])
def test_register_refuses_invalid_names_and_stores_nothing(
    registry: ModelRegistry, files: dict[str, Path], name: str
) -> None:
    with pytest.raises(InvalidName, match="must"):
        registry.register(name, tiny_new(), files)
    assert registry.list_models() == []
    assert list(registry.store.iter_hashes()) == []


def test_register_validates_files_and_metadata_before_storing(
    registry: ModelRegistry, tmp_path: Path, files: dict[str, Path]
) -> None:
    with pytest.raises(DataNotFound, match="must exist"):
        registry.register("m", tiny_new(), {**files, "source": tmp_path / "nope.pkl"})
    with pytest.raises(InvalidInputError, match=r"model\.onnx"):
        registry.register("m", tiny_new(), {"weights": files["model.onnx"]})
    with pytest.raises(InvalidName, match="file role"):
        registry.register("m", tiny_new(), {**files, "../x": files["model.onnx"]})
    with pytest.raises(InvalidInputError, match="JSON"):
        registry.register("m", tiny_new(), files, metrics={"f": object()})
    with pytest.raises(InvalidInputError, match="strings"):
        registry.register("m", tiny_new(), files, tags={"n": 1})  # type: ignore[dict-item]
    assert registry.list_models() == []
    assert list(registry.store.iter_hashes()) == []


# ---- get and list -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "error", "hint"),
    [
        ("ghost", ModelNotFound, "shipyard models list"),
        ("m:9", VersionNotFound, "Available versions: 1, 2"),
        ("m@prod", AliasNotFound, "Aliases: default"),
    ],
)
def test_get_errors_name_the_problem_with_a_hint(
    registry: ModelRegistry, files: dict[str, Path], ref: str, error: type[Exception], hint: str
) -> None:
    registry.register("m", tiny_new(), files)
    registry.register("m", tiny_new(), files)
    with pytest.raises(error) as info:
        registry.get(ref)
    assert hint in (info.value.hint or "")  # type: ignore[attr-defined]


@pytest.mark.parametrize(("ref", "error"), [("M", InvalidName), ("m:0", InvalidModelRef)])
def test_get_refuses_malformed_refs(
    registry: ModelRegistry, ref: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        registry.get(ref)


def test_get_accepts_every_ref_form(registry: ModelRegistry, files: dict[str, Path]) -> None:
    registry.register("m", tiny_new(), files)
    registry.register("m", tiny_new(), files)
    registry.promote("m:1", "prod")
    assert registry.get("m").version == 2
    assert registry.get("m:1").version == 1
    assert registry.get("m@prod").version == 1
    assert registry.get(ModelRef("m", alias="prod")).version == 1


def test_a_bare_name_without_default_is_alias_not_found(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    registry.register("m", tiny_new(), files, move_default=False)
    with pytest.raises(AliasNotFound, match="default"):
        registry.get("m")


def test_list_models_and_versions(registry: ModelRegistry, files: dict[str, Path]) -> None:
    registry.register("b", tiny_new(), files)
    registry.register("a", tiny_new(), files)
    registry.register("a", tiny_new(), files)
    registry.promote("a:1", "prod")
    summaries = registry.list_models()
    assert [s.name for s in summaries] == ["a", "b"]
    a = summaries[0]
    assert isinstance(a, ModelSummary)
    assert (a.latest_version, a.n_versions, a.aliases) == (2, 2, {"default": 2, "prod": 1})
    assert a.updated_at is not None and a.updated_at.tzinfo is not None
    assert [v.ref for v in registry.list_versions("a")] == ["a:1", "a:2"]
    with pytest.raises(ModelNotFound):
        registry.list_versions("ghost")


# ---- immutability -----------------------------------------------------------------------


def test_versions_are_immutable_through_the_api(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    mv = registry.register("m", tiny_new(), files)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mv.version = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        mv.manifest.framework = "torch"  # type: ignore[misc]
    # mutating what a caller got back does not reach the registry
    mv.manifest.files.clear()
    mv.metrics["x"] = 1
    again = registry.get("m:1")
    assert "model.onnx" in again.manifest.files
    assert again.metrics == {}
    # metadata updates leave files, signature and lineage alone
    registry.update_metadata("m:1", metrics={"acc": 1.0}, description="d", serving={"b": 4})
    after = registry.get("m:1")
    assert after.manifest == again.manifest
    blob = registry.artifact_path(after)
    assert not os.access(blob, os.W_OK) or os.geteuid() == 0
    assert not blob.stat().st_mode & 0o222


# ---- aliases ----------------------------------------------------------------------------


def test_set_and_remove_alias(registry: ModelRegistry, files: dict[str, Path]) -> None:
    registry.register("m", tiny_new(), files)
    registry.register("m", tiny_new(), files)
    registry.set_alias("m", "staging", 1, actor="alice")
    assert registry.get("m@staging").version == 1
    assert registry.get("m:1").aliases == ("staging",)
    registry.remove_alias("m", "staging", actor="bob")
    with pytest.raises(AliasNotFound):
        registry.get("m@staging")
    with pytest.raises(AliasNotFound):
        registry.remove_alias("m", "staging")
    with pytest.raises(VersionNotFound):
        registry.set_alias("m", "staging", 7)
    with pytest.raises(InvalidInputError):
        registry.set_alias("m", "staging", 0)
    with pytest.raises(InvalidName):
        registry.set_alias("m", "Bad Alias", 1)
    with pytest.raises(ModelNotFound):
        registry.set_alias("ghost", "prod", 1)
    events = registry.alias_history("m", "staging")
    assert [(e.old_version, e.new_version, e.actor, e.reason) for e in events] == [
        (None, 1, "alice", "promote"),
        (1, None, "bob", "remove"),
    ]


def test_promote_rollback_and_history(registry: ModelRegistry, files: dict[str, Path]) -> None:
    for _ in range(3):
        registry.register("m", tiny_new(), files)
    assert registry.promote("m:1", "prod", actor="alice").version == 1
    registry.promote("m:3", "prod", actor="bob")
    assert registry.get("m@prod").version == 3
    assert registry.rollback("m", "prod", actor="carol").version == 1
    events = registry.alias_history("m", "prod")
    assert [(e.name, e.old_version, e.new_version, e.actor) for e in events] == [
        ("m", None, 1, "alice"),
        ("m", 1, 3, "bob"),
        ("m", 3, 1, "carol"),
    ]
    assert [e.reason for e in events] == ["promote", "promote", "rollback"]
    assert all(e.at.tzinfo is not None for e in events)
    assert {e.alias for e in registry.alias_history("m")} == {"default", "prod"}


def test_repeated_rollback_walks_back_through_history(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    for _ in range(3):
        registry.register("m", tiny_new(), files)  # default: 1 -> 2 -> 3
    assert registry.rollback("m").version == 2
    assert registry.rollback("m").version == 1  # further back, not a flip to 3
    with pytest.raises(AliasNotFound, match="earlier target") as info:
        registry.rollback("m")
    assert "shipyard models history" in (info.value.hint or "")
    registry.promote("m:3", "default")
    assert registry.rollback("m").version == 1


def test_rollback_restores_a_removed_alias(registry: ModelRegistry, files: dict[str, Path]) -> None:
    registry.register("m", tiny_new(), files)
    registry.promote("m:1", "prod")
    registry.remove_alias("m", "prod")
    assert registry.rollback("m", "prod").version == 1
    assert registry.get("m@prod").version == 1


def test_rollback_without_an_earlier_target_is_alias_not_found(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    registry.register("m", tiny_new(), files)
    registry.promote("m:1", "prod")
    with pytest.raises(AliasNotFound, match="earlier target"):
        registry.rollback("m", "prod")
    with pytest.raises(AliasNotFound):
        registry.rollback("m", "never")
    with pytest.raises(ModelNotFound):
        registry.rollback("ghost")


def test_rollback_to_a_deleted_version_is_version_not_found(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    registry.register("m", tiny_new(), files)
    registry.register("m", tiny_new(), files)
    registry.delete("m:1")
    with pytest.raises(VersionNotFound, match="no version 1"):
        registry.rollback("m")


# ---- delete -----------------------------------------------------------------------------


def test_delete_is_refused_while_an_alias_points_at_it(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    registry.register("m", tiny_new(), files)
    registry.register("m", tiny_new(), files)
    registry.promote("m:2", "prod")
    with pytest.raises(AliasInUse, match="default") as info:
        registry.delete("m:2")
    assert "--force" in (info.value.hint or "")
    assert registry.get("m:2").version == 2
    registry.delete("m:1")
    with pytest.raises(VersionNotFound):
        registry.get("m:1")
    registry.delete("m@prod", force=True, actor="alice")
    with pytest.raises(AliasNotFound):
        registry.get("m")
    assert [(e.alias, e.reason, e.actor) for e in registry.alias_history("m")][-2:] == [
        ("default", "delete", "alice"),
        ("prod", "delete", "alice"),
    ]
    summary = registry.list_models()[0]
    assert (summary.n_versions, summary.latest_version, summary.aliases) == (0, None, {})
    assert registry.register("m", tiny_new(), files).version == 3  # numbers never reused


def test_delete_never_touches_blobs(registry: ModelRegistry, files: dict[str, Path]) -> None:
    mv = registry.register("m", tiny_new(), files)
    before = sorted(registry.store.iter_hashes())
    registry.delete(mv.ref, force=True)
    assert sorted(registry.store.iter_hashes()) == before


# ---- mutable metadata -------------------------------------------------------------------


def test_metadata_changes_are_merged_and_recorded(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    registry.register("m", tiny_new(), files)
    registry.update_metadata("m:1", metrics={"acc": 0.9}, tags={"team": "a"}, actor="alice")
    mv = registry.update_metadata(
        "m", metrics={"f1": 0.8}, description="hello", serving={"max_batch_size": 4}, actor="bob"
    )
    assert mv.metrics == {"acc": 0.9, "f1": 0.8}
    assert mv.tags == {"team": "a"}
    assert (mv.description, mv.serving) == ("hello", {"max_batch_size": 4})
    mv = registry.update_metadata("m:1", tags={"team": None}, metrics={"acc": 0.9})
    assert mv.tags == {}
    history = registry.metadata_history("m:1")
    assert [(e.field, e.actor) for e in history[:5]] == [
        ("metrics", "alice"),
        ("tags", "alice"),
        ("metrics", "bob"),
        ("description", "bob"),
        ("serving", "bob"),
    ]
    assert [e.field for e in history[5:]] == ["tags"]  # unchanged metrics are not recorded
    assert history[5].actor  # defaults to the OS user (or "unknown")
    assert (history[2].old, history[2].new) == ({"acc": 0.9}, {"acc": 0.9, "f1": 0.8})
    assert (history[3].old, history[3].new) == (None, "hello")
    assert history[0].ref == "m:1"
    assert history[0].at <= history[-1].at


def test_update_metadata_refuses_bad_values(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    registry.register("m", tiny_new(), files)
    with pytest.raises(InvalidInputError, match="strings"):
        registry.update_metadata("m:1", tags={"n": 3})  # type: ignore[dict-item]
    with pytest.raises(InvalidInputError, match="JSON"):
        registry.update_metadata("m:1", serving={"x": {1, 2}})
    with pytest.raises(VersionNotFound):
        registry.update_metadata("m:4", description="x")
    assert registry.metadata_history("m:1") == []


# ---- integrity --------------------------------------------------------------------------


def _flip_byte(registry: ModelRegistry, sha256: str) -> None:
    blob = registry.store.local_path(sha256)
    assert blob is not None
    data = bytearray(blob.read_bytes())
    data[10] ^= 0x01
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))


def test_artifact_path_and_read_artifact_return_verified_content(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    mv = registry.register("m", tiny_new(), files)
    assert registry.read_artifact("m") == files["model.onnx"].read_bytes()
    assert _sha(registry.artifact_path("m:1")) == _sha(files["model.onnx"])
    with pytest.raises(DataNotFound, match="role 'source'"):
        registry.read_artifact(mv, "source")


def test_a_flipped_byte_is_detected_at_read_and_by_verify(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    mv = registry.register("m", tiny_new(), files)
    assert registry.verify().ok
    assert registry.verify().checked == 2  # the model file and the manifest
    sha = mv.manifest.files["model.onnx"].sha256
    _flip_byte(registry, sha)
    with pytest.raises(ArtifactCorrupted, match="sha256") as info:
        registry.read_artifact("m")
    assert "shipyard models verify" in (info.value.hint or "")
    assert info.value.details["role"] == "model.onnx"
    with pytest.raises(ArtifactCorrupted):
        registry.artifact_path(mv)
    report = registry.verify()
    assert not report.ok
    assert report.mismatches == [
        {"ref": "m:1", "role": "model.onnx", "expected": sha, "got": report.mismatches[0]["got"]}
    ]
    assert report.mismatches[0]["got"] not in (sha, "missing")


def test_a_missing_blob_is_artifact_corrupted(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    mv = registry.register("m", tiny_new(), files)
    blob = registry.store.local_path(mv.manifest.files["model.onnx"].sha256)
    assert blob is not None
    blob.unlink()
    with pytest.raises(ArtifactCorrupted, match="missing"):
        registry.read_artifact(mv)
    with pytest.raises(ArtifactCorrupted, match="missing"):
        registry.artifact_path(mv)
    assert registry.verify().mismatches[0]["got"] == "missing"


def test_a_damaged_manifest_is_reported_by_verify(
    registry: ModelRegistry, files: dict[str, Path], settings: Settings
) -> None:
    registry.register("m", tiny_new(), files)
    manifest_shas = set(registry.store.iter_hashes()) - {_sha(files["model.onnx"])}
    (manifest_sha,) = manifest_shas
    _flip_byte(registry, manifest_sha)
    report = registry.verify()
    assert [(m["ref"], m["role"]) for m in report.mismatches] == [("m:1", "manifest")]
    with ModelRegistry.open(settings) as fresh, pytest.raises(ArtifactCorrupted):
        fresh.get("m:1")  # no cached copy: the manifest is re-hashed on load


# ---- gc ---------------------------------------------------------------------------------


def test_gc_removes_only_unreferenced_blobs(
    registry: ModelRegistry, files: dict[str, Path], other_onnx: Path
) -> None:
    keep = registry.register("keep", tiny_new(), files)
    gone = registry.register("gone", tiny_new(), {"model.onnx": other_onnx})
    registry.delete("gone:1", force=True)
    all_blobs = set(registry.store.iter_hashes())
    dry = registry.gc(grace_s=0, dry_run=True)
    assert dry.dry_run and len(dry.removed) == 2  # the file and its manifest
    assert set(registry.store.iter_hashes()) == all_blobs
    report = registry.gc(grace_s=0)
    assert set(report.removed) == set(dry.removed)
    assert gone.manifest.files["model.onnx"].sha256 in report.removed
    assert report.freed_bytes > other_onnx.stat().st_size
    assert registry.read_artifact(keep) == files["model.onnx"].read_bytes()
    assert registry.verify().ok
    assert registry.gc(grace_s=0).removed == []


def test_gc_grace_keeps_young_blobs_and_stale_temp_files_are_cleaned(
    registry: ModelRegistry, files: dict[str, Path], other_onnx: Path, settings: Settings
) -> None:
    registry.register("m", tiny_new(), {"model.onnx": other_onnx})
    registry.delete("m:1", force=True)
    assert registry.gc(grace_s=3600).removed == []  # asked to keep anything written lately
    tmp = settings.store_path / "tmp"
    stale, fresh = tmp / "blob-stale", tmp / "blob-fresh"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert registry.gc(dry_run=True).stale_tmp == 1
    assert stale.exists()
    report = registry.gc()
    assert (len(report.removed), report.stale_tmp) == (2, 1)
    assert not stale.exists() and fresh.exists()


class _GcAfterWrite:
    """A store that runs gc once, right after the first file is written: the worst time."""

    def __init__(self, inner: LocalArtifactStore, gc: Callable[[], object]) -> None:
        self.inner, self.gc, self.fired = inner, gc, False

    def put_file(self, path: Path) -> tuple[str, int]:
        out = self.inner.put_file(path)
        if not self.fired:
            self.fired = True
            self.gc()
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_gc_between_blob_write_and_commit_loses_nothing(
    registry: ModelRegistry, files: dict[str, Path]
) -> None:
    assert isinstance(registry.store, LocalArtifactStore)
    removed: list[str] = []
    racing = ModelRegistry(
        registry.engine,
        _GcAfterWrite(registry.store, lambda: removed.extend(registry.gc().removed)),  # type: ignore[arg-type]
    )
    mv = racing.register("m", tiny_new(), files)
    assert mv.manifest.files["model.onnx"].sha256 in removed  # gc did take it...
    assert registry.read_artifact("m:1") == files["model.onnx"].read_bytes()  # ...and it is back
    assert registry.verify().ok

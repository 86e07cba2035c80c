from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

import pytest

from shipyard.errors import ArtifactCorrupted, DataNotFound
from shipyard.registry import ArtifactStore, LocalArtifactStore


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


def test_local_store_satisfies_the_protocol(store: LocalArtifactStore) -> None:
    assert isinstance(store, ArtifactStore)


def test_put_file_stores_content_at_its_sha256_address(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"hello" * 1000)
    digest, size = store.put_file(src)
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    assert size == 5000
    blob = tmp_path / "store" / "blobs" / "sha256" / digest[:2] / digest
    assert store.local_path(digest) == blob
    assert blob.read_bytes() == src.read_bytes()
    assert not stat.S_IMODE(blob.stat().st_mode) & 0o222  # read-only
    assert list((tmp_path / "store" / "tmp").iterdir()) == []  # staging cleaned


def test_put_is_idempotent_and_deduplicates(store: LocalArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"same")
    first = store.put_file(src)
    assert store.put_file(src) == first
    assert store.put_bytes(b"same") == first
    assert list(store.iter_hashes()) == [first[0]]
    assert store.exists(first[0])


def test_put_file_of_a_missing_file_is_data_not_found(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    with pytest.raises(DataNotFound, match="must exist"):
        store.put_file(tmp_path / "nope")


def test_storing_existing_content_refreshes_its_time_for_gc(store: LocalArtifactStore) -> None:
    digest, _ = store.put_bytes(b"x")
    blob = store.local_path(digest)
    assert blob is not None
    old = time.time() - 7200
    os.utime(blob, (old, old))
    store.put_bytes(b"x")
    assert blob.stat().st_mtime > old + 3600


def test_storing_again_repairs_a_damaged_blob(store: LocalArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"precious")
    digest, _ = store.put_file(src)
    blob = store.local_path(digest)
    assert blob is not None
    blob.chmod(0o644)
    blob.write_bytes(b"damaged!")
    store.put_file(src)
    assert blob.read_bytes() == b"precious"


def test_read_of_a_missing_blob_is_artifact_corrupted(store: LocalArtifactStore) -> None:
    with pytest.raises(ArtifactCorrupted, match="missing") as info:
        store.read_bytes("0" * 64)
    assert "verify" in (info.value.hint or "")


@pytest.mark.parametrize("bad", ["abc", "../" + "0" * 61, "G" * 64])
def test_malformed_addresses_are_refused(store: LocalArtifactStore, bad: str) -> None:
    with pytest.raises(ArtifactCorrupted, match="64 lower-case hex"):
        store.exists(bad)


def test_delete_removes_and_tolerates_missing(store: LocalArtifactStore) -> None:
    digest, _ = store.put_bytes(b"bye")
    store.delete(digest)
    store.delete(digest)
    assert not store.exists(digest)
    assert list(store.iter_hashes()) == []


def test_clean_tmp_removes_only_stale_staging_files(store: LocalArtifactStore) -> None:
    stale = store.tmp / "blob-stale"
    fresh = store.tmp / "blob-fresh"
    stale.write_bytes(b"left by a killed writer")
    fresh.write_bytes(b"being written now")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert store.stale_tmp() == [stale]
    assert store.clean_tmp() == 1
    assert not stale.exists()
    assert fresh.exists()

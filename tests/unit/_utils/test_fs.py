from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from shipyard._utils.fs import (
    atomic_write_text,
    atomic_writer,
    is_within,
    sha256_bytes,
    sha256_file,
)


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["f.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def crash() -> None:
        with atomic_writer(target) as fh:
            fh.write(b"half")
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        crash()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_hashes_match_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == sha256_bytes(data) == hashlib.sha256(data).hexdigest()


def test_is_within_follows_symlinks_and_dotdot(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.txt").write_text("x")
    (root / "link").symlink_to(tmp_path)
    assert is_within(root, root / "ok.txt")
    assert not is_within(root, root / ".." / "elsewhere")
    assert not is_within(root, root / "link" / "anything")

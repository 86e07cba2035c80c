"""Content-addressed artifact storage: the ArtifactStore protocol and the local file store.

Blobs live at ``<root>/blobs/sha256/<ab>/<hash>`` and are written staged: a temporary file
in ``<root>/tmp`` (same file system, so the rename is atomic), fsync, ``os.replace``, then
an fsync of the directory. A blob is read-only and immutable once in place; storing the
same content again refreshes its modification time (so a gc grace window counts from the
latest use) and repairs it if it was damaged on disk.

Imports: errors, _utils.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from shipyard._utils.fs import CHUNK_BYTES, fsync_dir, sha256_file
from shipyard.errors import ArtifactCorrupted, DataNotFound

__all__ = ["ArtifactStore", "LocalArtifactStore"]

logger = logging.getLogger(__name__)

_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


@runtime_checkable
class ArtifactStore(Protocol):
    """Where file contents live, addressed by sha256 (local disk now; S3 later).

    Implementations must make a blob visible only once it is complete, and must make
    ``put_*`` idempotent. Nothing above this protocol knows where blobs physically are,
    except through :meth:`local_path`.

    Example:
        >>> store = LocalArtifactStore(Path("/tmp/store"))      # doctest: +SKIP
        >>> digest, size = store.put_file(Path("model.onnx"))  # doctest: +SKIP
        >>> store.read_bytes(digest)[:4]                        # doctest: +SKIP
    """

    def put_file(self, path: Path) -> tuple[str, int]:
        """Store a file's content; returns (sha256, size). Idempotent."""
        ...

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store bytes; returns (sha256, size). Idempotent."""
        ...

    def read_bytes(self, sha256: str) -> bytes:
        """The stored content, unverified."""
        ...

    def local_path(self, sha256: str) -> Path | None:
        """A local file holding the content, or None for remote stores."""
        ...

    def exists(self, sha256: str) -> bool:
        """Whether the content is stored."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove the content (missing content is not an error)."""
        ...

    def iter_hashes(self) -> Iterator[str]:
        """Every stored sha256."""
        ...


def _check_hash(sha256: str) -> str:
    if not isinstance(sha256, str) or not _HASH_RE.match(sha256):
        raise ArtifactCorrupted(
            f"A blob address must be 64 lower-case hex digits. Got {str(sha256)[:80]!r} instead."
        )
    return sha256


class LocalArtifactStore:
    """Blobs in a local folder, one file per distinct content.

    Layout::

        <root>/blobs/sha256/<first two hex digits>/<sha256>   read-only blobs
        <root>/tmp/blob-*                                     staging (same file system)

    Args:
        root: The store folder; created if missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.tmp = self.root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        _check_hash(sha256)
        return self.blobs / sha256[:2] / sha256

    def _intact(self, final: Path, digest: str) -> bool:
        """Whether ``final`` exists with the right content; refreshes its mtime if so."""
        try:
            ok = sha256_file(final) == digest
        except FileNotFoundError:
            return False
        if ok:
            # a gc grace window must count from now: a register is about to use this blob
            with contextlib.suppress(OSError):
                os.utime(final)
        else:
            logger.warning("Blob %s was damaged on disk; rewriting it", digest)
        return ok

    def _commit(self, tmp: str, digest: str) -> None:
        final = self._path(digest)
        if self._intact(final, digest):
            os.unlink(tmp)
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, final)
        fsync_dir(final.parent)

    def _stage(self) -> tuple[int, str]:
        return tempfile.mkstemp(dir=self.tmp, prefix="blob-")

    def put_file(self, path: Path) -> tuple[str, int]:
        """Copy a file into the store, staged and fsynced.

        Args:
            path: The file to store.

        Returns:
            Its sha256 (hex) and size in bytes.

        Raises:
            DataNotFound: ``path`` is not an existing file.
        """
        if not Path(path).is_file():
            raise DataNotFound(f"File {str(path)!r} must exist to be stored. It was not found.")
        h = hashlib.sha256()
        size = 0
        fd, tmp = self._stage()
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                while chunk := src.read(CHUNK_BYTES):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            self._commit(tmp, h.hexdigest())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return h.hexdigest(), size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store bytes, staged and fsynced.

        Args:
            data: The content.

        Returns:
            Its sha256 (hex) and size in bytes.
        """
        digest = hashlib.sha256(data).hexdigest()
        if self._intact(self._path(digest), digest):
            return digest, len(data)
        fd, tmp = self._stage()
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            self._commit(tmp, digest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return digest, len(data)

    def read_bytes(self, sha256: str) -> bytes:
        """The stored content, unverified.

        Raises:
            ArtifactCorrupted: no blob with that address (it went missing).
        """
        try:
            return self._path(sha256).read_bytes()
        except FileNotFoundError:
            raise ArtifactCorrupted(
                f"Blob {sha256[:16]}… must be in the store. It is missing.",
                hint="Run `shipyard models verify`; restore the store from a backup.",
            ) from None

    def local_path(self, sha256: str) -> Path | None:
        """The blob's path (whether or not it exists)."""
        return self._path(sha256)

    def exists(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        return self._path(sha256).is_file()

    def delete(self, sha256: str) -> None:
        """Remove a blob; a missing blob is not an error."""
        with contextlib.suppress(FileNotFoundError):
            self._path(sha256).unlink()

    def iter_hashes(self) -> Iterator[str]:
        """Every stored sha256, sorted."""
        if not self.blobs.is_dir():
            return
        for sub in sorted(self.blobs.iterdir()):
            if sub.is_dir():
                for blob in sorted(sub.iterdir()):
                    if _HASH_RE.match(blob.name) and blob.is_file():
                        yield blob.name

    def stale_tmp(self, older_than_s: float = 3600.0) -> list[Path]:
        """Staging files older than ``older_than_s``: left behind by killed writers."""
        cutoff = time.time() - older_than_s
        out: list[Path] = []
        for item in sorted(self.tmp.iterdir()):
            with contextlib.suppress(OSError):
                if item.is_file() and item.stat().st_mtime < cutoff:
                    out.append(item)
        return out

    def clean_tmp(self, older_than_s: float = 3600.0) -> int:
        """Remove staging files left by killed writers; returns how many."""
        removed = 0
        for item in self.stale_tmp(older_than_s):
            with contextlib.suppress(OSError):
                item.unlink()
                removed += 1
        return removed

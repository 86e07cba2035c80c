"""Content-addressed artifact storage: the ArtifactStore protocol and the local file store.

Blobs live at ``<root>/blobs/sha256/<ab>/<hash>`` and are written staged: a temporary file
in ``<root>/tmp`` (same file system, so the rename is atomic), fsync, ``os.replace``, then
an fsync of the directory. A blob is read-only and immutable once in place; storing the
same content again refreshes its modification time (so a gc grace window counts from the
latest use) and repairs it if it was damaged on disk.

Encryption at rest (opt-in): with ``encrypt=True`` and a key provider, new blobs are
AES-256-GCM envelopes (``_utils.crypto``) bound to their address; the address stays the
sha256 of the *plaintext*, so dedup and verification work unchanged. Encrypted blobs are
decrypted into memory only (:meth:`read_bytes`); :meth:`local_path` returns None for
them, since no plaintext file exists. A store that holds encrypted blobs records it in
``<root>/encryption.json`` and refuses to open without a key.

Imports: errors, _utils.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from shipyard._utils.crypto import MAGIC, KeyProvider, decrypt_bytes, encrypt_bytes, is_encrypted
from shipyard._utils.fs import (
    CHUNK_BYTES,
    atomic_write_bytes,
    fsync_dir,
    sha256_bytes,
    sha256_file,
)
from shipyard.errors import (
    ArtifactCorrupted,
    DataNotFound,
    DecryptionFailed,
    EncryptionKeyMissing,
)

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
        keys: Decrypts encrypted blobs (and encrypts new ones when ``encrypt``).
        encrypt: Write new blobs encrypted (needs ``keys``).

    Raises:
        EncryptionKeyMissing: ``encrypt`` without keys, or the store holds encrypted
            blobs and no keys were given.
    """

    MARKER = "encryption.json"

    def __init__(
        self, root: Path, *, keys: KeyProvider | None = None, encrypt: bool = False
    ) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.tmp = self.root / "tmp"
        self.keys = keys
        self.encrypt = encrypt
        if encrypt and keys is None:
            raise EncryptionKeyMissing(
                f"Registry store {str(self.root)!r} must have a key to encrypt. None is set.",
                hint="Set SHIPYARD_ENCRYPTION_KEY (base64 of 32 random bytes) or "
                "SHIPYARD_REGISTRY__ENCRYPTION_KEY_FILE.",
            )
        if keys is None and (self.root / self.MARKER).is_file():
            raise EncryptionKeyMissing(
                f"Registry store {str(self.root)!r} holds encrypted blobs and must be opened "
                "with a key. None is set.",
                hint="Set SHIPYARD_ENCRYPTION_KEY or SHIPYARD_REGISTRY__ENCRYPTION_KEY_FILE.",
            )
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        if encrypt and keys is not None:
            self._mark(keys.current_key_id)

    def _mark(self, key_id: str) -> None:
        marker = self.root / self.MARKER
        seen: list[str] = []
        with contextlib.suppress(OSError, ValueError):
            seen = list(json.loads(marker.read_text()).get("key_ids", []))
        if key_id not in seen:
            body = {"algorithm": "AES-256-GCM", "key_ids": [*seen, key_id]}
            atomic_write_bytes(marker, json.dumps(body, indent=2).encode())

    def _path(self, sha256: str) -> Path:
        _check_hash(sha256)
        return self.blobs / sha256[:2] / sha256

    def _plain_digest(self, final: Path, digest: str) -> str:
        if not self._is_encrypted_file(final):
            return sha256_file(final)
        return sha256_bytes(decrypt_bytes(final.read_bytes(), self.keys, aad=digest.encode()))

    def _intact(self, final: Path, digest: str) -> bool:
        """Whether ``final`` exists with the right content; refreshes its mtime if so.

        A plaintext blob in a store that now encrypts counts as not intact (rewritten).
        """
        try:
            ok = self._plain_digest(final, digest) == digest
            if ok and self.encrypt and not self._is_encrypted_file(final):
                return False
        except FileNotFoundError:
            return False
        except DecryptionFailed:
            ok = False
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
        if self.encrypt:  # the envelope is one AEAD message: it is built in memory
            return self.put_bytes(Path(path).read_bytes())
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
        payload = data
        if self.encrypt and self.keys is not None:
            payload = encrypt_bytes(data, self.keys, aad=digest.encode())
        fd, tmp = self._stage()
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
                out.flush()
                os.fsync(out.fileno())
            self._commit(tmp, digest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return digest, len(data)

    def read_bytes(self, sha256: str) -> bytes:
        """The stored content (decrypted in memory if encrypted), not re-hashed.

        Raises:
            ArtifactCorrupted: no blob with that address (it went missing).
            EncryptionKeyMissing: the blob is encrypted with a key that is not configured.
            DecryptionFailed: the key is wrong or the ciphertext was altered.
        """
        try:
            data = self._path(sha256).read_bytes()
        except FileNotFoundError:
            raise ArtifactCorrupted(
                f"Blob {sha256[:16]}… must be in the store. It is missing.",
                hint="Run `shipyard models verify`; restore the store from a backup.",
            ) from None
        if is_encrypted(data):
            return decrypt_bytes(data, self.keys, aad=sha256.encode())
        return data

    @staticmethod
    def _is_encrypted_file(path: Path) -> bool:
        try:
            with open(path, "rb") as f:
                return is_encrypted(f.read(len(MAGIC)))
        except FileNotFoundError:
            return False

    def local_path(self, sha256: str) -> Path | None:
        """The blob's path (whether or not it exists); None for an encrypted blob."""
        path = self._path(sha256)
        return None if self._is_encrypted_file(path) else path

    def blob_file(self, sha256: str) -> Path:
        """The file that holds the blob as stored (possibly encrypted): for stat and gc."""
        return self._path(sha256)

    def encrypt_existing(self) -> int:
        """Rewrite every plaintext blob encrypted (staged, atomic); returns how many.

        Raises:
            EncryptionKeyMissing: the store was not opened with ``encrypt=True``.
        """
        if not self.encrypt:
            raise EncryptionKeyMissing(
                "The store must be opened with encryption on to encrypt blobs. It is off.",
                hint="Set SHIPYARD_REGISTRY__ENCRYPT=true and a key.",
            )
        count = 0
        for sha in list(self.iter_hashes()):
            path = self._path(sha)
            if self._is_encrypted_file(path):
                continue
            data = path.read_bytes()
            if sha256_bytes(data) != sha:
                logger.warning("Blob %s is damaged on disk; left as it is", sha)
                continue
            self.put_bytes(data)
            count += 1
        return count

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

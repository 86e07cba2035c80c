"""Blob integrity: re-hashing what versions reference, and finding what nothing references.

The pieces behind ``ModelRegistry.verify``, ``ModelRegistry.gc`` and the re-hash that
every artifact read does; the registry owns the transactions and the logging.

Imports: metadata, store, _types, spec, errors, _utils.
"""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shipyard._utils.fs import sha256_bytes, sha256_file
from shipyard.errors import ArtifactCorrupted, DataNotFound, DecryptionFailed
from shipyard.registry import metadata as md
from shipyard.registry._types import MISSING, GcReport, ModelVersion, VerifyReport
from shipyard.registry.store import ArtifactStore, LocalArtifactStore
from shipyard.spec import FileEntry

__all__ = [
    "check_blobs",
    "corrupted",
    "hash_blob",
    "referenced",
    "sweep",
    "verified_bytes",
    "verified_path",
]


def hash_blob(store: ArtifactStore, sha256: str) -> str:
    """The blob's actual sha256 (streamed for local plaintext blobs), or why there is none.

    Returns ``"missing"`` for a missing blob and ``"undecryptable"`` for an encrypted one
    that fails to authenticate (altered); a key that is not configured raises.
    """
    path = store.local_path(sha256)
    try:
        if path is not None:
            return sha256_file(path)
        return sha256_bytes(store.read_bytes(sha256))
    except (FileNotFoundError, ArtifactCorrupted):
        return MISSING
    except DecryptionFailed:
        return UNDECRYPTABLE


UNDECRYPTABLE = "undecryptable"


def corrupted(mv: ModelVersion, role: str, expected: str, got: str) -> ArtifactCorrupted:
    """The error for a file of ``mv`` whose blob hashed to ``got`` (or is missing)."""
    if got == MISSING:
        message = f"File {role!r} of {mv.ref} must be in the store. It is missing."
    else:
        message = (
            f"File {role!r} of {mv.ref} must have sha256 {expected[:16]}…. "
            f"Got {got[:16]}… instead: it was changed on disk."
        )
    return ArtifactCorrupted(
        message,
        hint="Run `shipyard models verify`; restore it from a backup or re-register.",
        details={"ref": mv.ref, "role": role, "expected": expected, "got": got},
    )


def verified_bytes(store: ArtifactStore, mv: ModelVersion, role: str, entry: FileEntry) -> bytes:
    """The content of ``mv``'s file ``role``, re-hashed against ``entry``."""
    try:
        data = store.read_bytes(entry.sha256)
    except ArtifactCorrupted:
        raise corrupted(mv, role, entry.sha256, MISSING) from None
    got = sha256_bytes(data)
    if got != entry.sha256:
        raise corrupted(mv, role, entry.sha256, got)
    return data


def verified_path(store: ArtifactStore, mv: ModelVersion, role: str, entry: FileEntry) -> Path:
    """The store path of ``mv``'s file ``role``, re-hashed against ``entry`` first."""
    path = store.local_path(entry.sha256)
    if path is None:
        raise DataNotFound(
            f"File {role!r} of {mv.ref} must be a local plaintext file to have a path. "
            "It is not (the store is remote or encrypts at rest).",
            hint="Use read_artifact (bytes in memory) instead.",
        )
    got = hash_blob(store, entry.sha256)
    if got != entry.sha256:
        raise corrupted(mv, role, entry.sha256, got)
    return path


def referenced(conn: Connection) -> dict[str, list[tuple[str, str]]]:
    """Every blob a version references: sha256 -> ``(name:version, role)`` users."""
    refs: dict[str, list[tuple[str, str]]] = {}
    v, f = md.versions.c, md.version_files.c
    rows = conn.execute(
        sa.select(md.models.c.name, v.version, v.manifest_sha256).join(
            md.versions, v.model_id == md.models.c.id
        )
    )
    for name, version, msha in rows:
        refs.setdefault(msha, []).append((f"{name}:{version}", "manifest"))
    file_rows = conn.execute(
        sa.select(md.models.c.name, v.version, f.role, f.sha256)
        .join(md.versions, v.model_id == md.models.c.id)
        .join(md.version_files, f.version_id == v.id)
    )
    for name, version, role, sha in file_rows:
        refs.setdefault(sha, []).append((f"{name}:{version}", role))
    return refs


def check_blobs(store: ArtifactStore, refs: dict[str, list[tuple[str, str]]]) -> VerifyReport:
    """Re-hash every blob in ``refs`` (sha256 -> its users, as ``(ref, role)``)."""
    report = VerifyReport()
    for sha, users in sorted(refs.items()):
        report.checked += 1
        got = hash_blob(store, sha)
        if got != sha:
            for ref, role in sorted(users):
                report.mismatches.append({"ref": ref, "role": role, "expected": sha, "got": got})
    return report


def sweep(store: ArtifactStore, keep: set[str], report: GcReport, *, grace_s: float) -> None:
    """Add every blob outside ``keep`` to ``report``; delete it unless a dry run.

    Blobs written less than ``grace_s`` seconds ago are kept. Call it under the metadata
    write lock (a dry run only needs a read).
    """
    now = time.time()
    for sha in list(store.iter_hashes()):
        if sha in keep:
            continue
        path = store.blob_file(sha) if isinstance(store, LocalArtifactStore) else None
        size = 0
        if path is not None:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if grace_s > 0 and now - st.st_mtime < grace_s:
                continue
            size = st.st_size
        report.removed.append(sha)
        report.freed_bytes += size
        if not report.dry_run:
            store.delete(sha)

"""Version archives: writing one (re-hashing every file) and reading one back safely.

An archive is a ``.tar.gz`` with ``manifest.json``, ``metadata.json`` and ``files/<role>``.
Reading checks every member (no links, devices, absolute paths, ``..`` or unexpected
names; each at most once) and every file's sha256 and size before anything is stored.
``ModelRegistry.export_version`` and ``ModelRegistry.import_archive`` are the public face.

Imports: store, manifest, _types, _integrity, spec, errors, _utils.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from shipyard._utils.fs import CHUNK_BYTES, atomic_writer, sha256_bytes
from shipyard.errors import ArtifactCorrupted, InvalidData, UnsafeArtifact
from shipyard.registry import manifest as mf
from shipyard.registry._integrity import corrupted
from shipyard.registry._types import MISSING, ModelVersion
from shipyard.registry.store import ArtifactStore
from shipyard.spec import FileEntry, ModelManifest, NewVersion, validate_name

__all__ = ["UnpackedArchive", "unpack", "write_archive"]

_MAX_JSON_MEMBER_BYTES = 16 * 1024 * 1024


class _HashingReader:
    """A read-only file wrapper that hashes what is read through it."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self.hash.update(data)
        return data


def write_archive(
    mv: ModelVersion,
    out: Path,
    store: ArtifactStore,
    read_artifact: Callable[[ModelVersion, str], bytes],
) -> Path:
    """Write ``mv`` to ``out`` (a path, or a folder for ``<name>-<version>.tar.gz``).

    Each file is re-hashed as it is written; the archive appears atomically, and only if
    all were intact (otherwise ArtifactCorrupted). ``read_artifact`` serves stores that
    keep no local files. Returns the archive's path.
    """
    out = Path(out)
    if out.is_dir():
        out = out / f"{mv.name}-{mv.version}.tar.gz"
    meta = {
        "metrics": mv.metrics,
        "tags": mv.tags,
        "description": mv.description,
        "serving": mv.serving,
    }
    mtime = int(mv.created_at.timestamp())

    def info(name: str, size: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = size, 0o644, mtime
        return ti

    with atomic_writer(out) as fh, tarfile.open(fileobj=fh, mode="w:gz") as tar:
        for name, data in (
            ("manifest.json", mf.to_json(mv.manifest)),
            ("metadata.json", json.dumps(meta, sort_keys=True, default=str).encode()),
        ):
            tar.addfile(info(name, len(data)), io.BytesIO(data))
        for role, entry in mv.manifest.files.items():
            ti = info(f"files/{role}", entry.size_bytes)
            _add_file(tar, ti, mv, role, entry, store, read_artifact)
    return out


def _add_file(
    tar: tarfile.TarFile,
    ti: tarfile.TarInfo,
    mv: ModelVersion,
    role: str,
    entry: FileEntry,
    store: ArtifactStore,
    read_artifact: Callable[[ModelVersion, str], bytes],
) -> None:
    path = store.local_path(entry.sha256)
    if path is None:  # an encrypted (or remote) blob: decrypted and re-hashed in memory
        tar.addfile(ti, io.BytesIO(read_artifact(mv, role)))
        return
    try:
        with open(path, "rb") as src:
            reader = _HashingReader(src)
            tar.addfile(ti, reader)
            reader.read()  # a longer file must not pass the hash check
    except FileNotFoundError:
        raise corrupted(mv, role, entry.sha256, MISSING) from None
    except OSError as exc:  # tarfile: "unexpected end of data" (file shrank)
        raise corrupted(mv, role, entry.sha256, f"short file ({exc})") from exc
    got = reader.hash.hexdigest()
    if got != entry.sha256:
        raise corrupted(mv, role, entry.sha256, got)


@dataclass(frozen=True)
class UnpackedArchive:
    """A checked archive, its files staged in a temporary folder.

    Attributes:
        manifest: The manifest it carries (its name, version and lineage are the source's).
        new: What to register: the manifest's signature, task, framework and lineage.
        files: Role -> staged file, each already checked against the manifest.
        meta: ``metadata.json`` (metrics, tags, description, serving), or empty.
        tags: The tags to register: the archive's plus ``imported_from`` and
            ``imported_manifest_sha256``.
    """

    manifest: ModelManifest
    new: NewVersion
    files: dict[str, Path]
    meta: dict[str, Any]
    tags: dict[str, Any]


@contextmanager
def unpack(path: Path) -> Iterator[UnpackedArchive]:
    """Check every member of the archive at ``path`` and stage its files until exit.

    Raises UnsafeArtifact, ArtifactCorrupted, InvalidData or ConfigError (see
    ``ModelRegistry.import_archive``); nothing is yielded unless every check passed.
    """
    with tempfile.TemporaryDirectory(prefix="shipyard-import-") as tmp:
        manifest_data, meta_data, staged = _read_archive(path, Path(tmp))
        if manifest_data is None:
            raise InvalidData(f"Archive {str(path)!r} must contain manifest.json. It does not.")
        manifest = mf.from_json(manifest_data)
        missing = sorted(set(manifest.files) - set(staged))
        extra = sorted(set(staged) - set(manifest.files))
        if missing or extra:
            raise InvalidData(
                f"Archive files must match its manifest's roles {sorted(manifest.files)}. "
                f"Got missing {missing} and unlisted {extra} instead."
            )
        for role, entry in manifest.files.items():
            _, digest, size = staged[role]
            if digest != entry.sha256 or size != entry.size_bytes:
                raise ArtifactCorrupted(
                    f"Archive file {role!r} must have sha256 {entry.sha256[:16]}… and "
                    f"{entry.size_bytes} bytes. Got {digest[:16]}… and {size} bytes instead.",
                    hint="The archive was changed or damaged; export it again.",
                )
        meta = _parse_meta(meta_data, path)
        new = NewVersion(
            signature=manifest.signature,
            task=manifest.task,
            framework=manifest.framework,
            framework_version=manifest.framework_version,
            opset=manifest.opset,
            parity=manifest.parity,
            lineage=manifest.lineage,
        )
        tags = {
            **dict(meta.get("tags") or {}),
            "imported_from": manifest.ref,
            "imported_manifest_sha256": sha256_bytes(manifest_data),
        }
        yield UnpackedArchive(
            manifest=manifest,
            new=new,
            files={role: p for role, (p, _, _) in staged.items()},
            meta=meta,
            tags=tags,
        )


def _read_archive(
    path: Path, tmp: Path
) -> tuple[bytes | None, bytes | None, dict[str, tuple[Path, str, int]]]:
    """Check and unpack an archive: (manifest bytes, metadata bytes, role -> staged file)."""
    manifest_data: bytes | None = None
    meta_data: bytes | None = None
    staged: dict[str, tuple[Path, str, int]] = {}
    seen: set[str] = set()
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for info in tar:
                member = _safe_member_name(info)
                if info.isdir():
                    continue
                if member in seen:
                    raise UnsafeArtifact(
                        f"Archive members must be unique. Got {member!r} twice instead."
                    )
                seen.add(member)
                src = tar.extractfile(info)
                if src is None:  # pragma: no cover - regular files always extract
                    raise InvalidData(f"Archive member {member!r} cannot be read.")
                if member in ("manifest.json", "metadata.json"):
                    if info.size > _MAX_JSON_MEMBER_BYTES:
                        raise InvalidData(
                            f"Archive member {member!r} must be at most "
                            f"{_MAX_JSON_MEMBER_BYTES} bytes. Got {info.size} instead."
                        )
                    if member == "manifest.json":
                        manifest_data = src.read()
                    else:
                        meta_data = src.read()
                    continue
                role = member.split("/", 1)[1]
                validate_name(role, kind="file role")
                target = tmp / str(len(staged))
                h = hashlib.sha256()
                size = 0
                with open(target, "wb") as dst:
                    while chunk := src.read(CHUNK_BYTES):
                        h.update(chunk)
                        dst.write(chunk)
                        size += len(chunk)
                staged[role] = (target, h.hexdigest(), size)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidData(
            f"Archive {str(path)!r} must be a tar.gz written by shipyard. Got an error "
            f"reading it instead: {exc}."
        ) from exc
    return manifest_data, meta_data, staged


def _parse_meta(data: bytes | None, path: Path) -> dict[str, Any]:
    if not data:
        return {}
    try:
        meta = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidData(
            f"metadata.json in {str(path)!r} must be valid JSON. Got an error: {exc}."
        ) from exc
    if not isinstance(meta, dict):
        raise InvalidData(
            f"metadata.json in {str(path)!r} must be a JSON object. "
            f"Got {type(meta).__name__} instead."
        )
    return meta


def _safe_member_name(info: tarfile.TarInfo) -> str:
    name = info.name
    pure = PurePosixPath(name)
    if not (info.isfile() or info.isdir()):
        raise UnsafeArtifact(
            f"Archive members must be regular files. Got {name!r} of type {info.type!r} instead.",
        )
    if (
        pure.is_absolute()
        or ".." in pure.parts
        or "\\" in name
        or not pure.parts
        or ":" in pure.parts[0]
    ):
        raise UnsafeArtifact(
            f"Archive member paths must stay inside the archive. Got {name!r} instead.",
        )
    if info.isfile() and not (
        name in ("manifest.json", "metadata.json")
        or (len(pure.parts) == 2 and pure.parts[0] == "files" and name == str(pure))
    ):
        raise UnsafeArtifact(
            f"Archive members must be manifest.json, metadata.json or files/<role>. "
            f"Got {name!r} instead."
        )
    return name

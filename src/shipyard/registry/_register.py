"""Registration: check a new version's inputs, write its blobs, then commit its rows.

Blobs are written (staged, fsynced) before one write transaction records the version, so
a process killed at any point leaves either no trace in the metadata or the whole version.
Inside that transaction every blob is checked again (gc deletes only under the same lock)
and written again if gc reclaimed it meanwhile. A version number taken by another writer
is retried. ``ModelRegistry.register`` is the public face and logs the result.

Imports: _sql, _types, store, manifest, metadata, spec, errors, _utils.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from shipyard._utils import faults
from shipyard.errors import ConflictError, DataNotFound, InvalidData, InvalidInputError
from shipyard.registry import _audit, _sql
from shipyard.registry import manifest as mf
from shipyard.registry import metadata as md
from shipyard.registry._types import (
    MODEL_ROLE,
    check_json_mapping,
    check_tags,
    parse_ts,
    resolve_actor,
)
from shipyard.registry.store import ArtifactStore
from shipyard.spec import DEFAULT_ALIAS, FileEntry, ModelManifest, NewVersion, validate_name

__all__ = ["register_version"]

_REGISTER_ATTEMPTS = 5


def register_version(
    engine: sa.engine.Engine,
    store: ArtifactStore,
    name: str,
    new: NewVersion,
    files: Mapping[str, Path],
    *,
    move_default: bool | None,
    actor: str | None,
    metrics: Mapping[str, Any] | None,
    description: str | None,
    tags: Mapping[str, str] | None,
    serving: Mapping[str, Any] | None = None,
    filenames: Mapping[str, str] | None = None,
    action: str = "register",
) -> int:
    """Check the inputs, write the blobs, then commit the version; returns its number.

    ``ModelRegistry.register`` documents the arguments and errors; ``serving`` and
    ``filenames`` (role -> original file name) serve imports.
    """
    validate_name(name)
    if not isinstance(new, NewVersion):
        raise InvalidInputError(f"new must be a NewVersion. Got {type(new).__name__} instead.")
    if MODEL_ROLE not in files:
        raise InvalidInputError(
            f"files must include the role {MODEL_ROLE!r}. Got {sorted(files)} instead."
        )
    for role, path in files.items():
        validate_name(role, kind="file role")
        if not Path(path).is_file():
            raise DataNotFound(
                f"File {str(path)!r} (role {role!r}) must exist to be registered. It was not found."
            )
    meta = {
        "metrics": check_json_mapping(metrics or {}, "metrics"),
        "tags": check_tags(tags or {}, allow_none=False),
        "serving": check_json_mapping(serving or {}, "serving"),
        "description": description,
    }
    entries: dict[str, FileEntry] = {}
    for role, path in files.items():
        digest, size = store.put_file(Path(path))
        filename = (filenames or {}).get(role) or Path(path).name
        entries[role] = FileEntry(sha256=digest, size_bytes=size, filename=filename)
    faults.reach("register.after-blob-write")
    if move_default is None:
        move_default = new.lineage.parent_version is None
    who = resolve_actor(actor)
    for attempt in range(_REGISTER_ATTEMPTS):
        try:
            return _commit_version(
                engine, store, name, new, files, entries, move_default, who, meta, action
            )
        except SAIntegrityError:
            # another writer took the number (backends without BEGIN IMMEDIATE)
            if attempt == _REGISTER_ATTEMPTS - 1:
                raise ConflictError(
                    f"Registering {name!r} must get a free version number. "
                    f"{_REGISTER_ATTEMPTS} attempts collided with other writers.",
                    hint="Retry the registration.",
                ) from None
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _commit_version(
    engine: sa.engine.Engine,
    store: ArtifactStore,
    name: str,
    new: NewVersion,
    files: Mapping[str, Path],
    entries: dict[str, FileEntry],
    move_default: bool,
    actor: str,
    meta: dict[str, Any],
    action: str = "register",
) -> int:
    now = md.now_iso()
    with _sql.writing(engine) as conn:
        # gc deletes only under this same write lock, so a blob present now stays
        # present until we commit; one reclaimed since we wrote it is written again
        for role, entry in entries.items():
            if not store.exists(entry.sha256):
                digest, _ = store.put_file(Path(files[role]))
                if digest != entry.sha256:
                    raise InvalidData(
                        f"File {str(files[role])!r} must not change while it is being "
                        "registered. Its content changed."
                    )
        mid, version = _sql.next_version(conn, name, now)
        manifest = ModelManifest(
            name=name,
            version=version,
            signature=new.signature,
            task=new.task,
            framework=new.framework,
            framework_version=new.framework_version,
            opset=new.opset,
            files=entries,
            created_at=parse_ts(now),
            lineage=new.lineage,
            parity=new.parity,
        )
        manifest_sha, _ = store.put_bytes(mf.to_json(manifest))
        _sql.insert_version(
            conn, mid, version, manifest_sha, entries, now=now, actor=actor, meta=meta
        )
        _audit.record(
            conn,
            action,
            f"{name}:{version}",
            actor,
            {
                "manifest_sha256": manifest_sha,
                "files": {role: e.sha256 for role, e in sorted(entries.items())},
            },
        )
        if move_default:
            _sql.move_alias(conn, mid, DEFAULT_ALIAS, version, actor, "register")
        faults.reach("register.before-metadata-commit")
    faults.reach("register.after-metadata-commit")
    return version

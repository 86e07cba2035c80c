"""ModelRegistry: versioned, immutable model storage with aliases, history and integrity checks.

Registration writes blobs first (staged and fsynced), then commits all metadata in one
transaction; a reader therefore never sees a half-written version, and a process killed at
any moment leaves a registry that opens and loads every listed version. Named fault points
(``_utils.faults``) let the tests kill a real process at each step.

Imports: store, metadata, manifest, config, spec, errors, _utils.
"""

from __future__ import annotations

import getpass
import io
import json
import logging
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from shipyard._utils import faults
from shipyard._utils.fs import atomic_writer, sha256_bytes
from shipyard.config import Settings
from shipyard.errors import (
    AliasInUse,
    AliasNotFound,
    ArtifactCorrupted,
    DataNotFound,
    InvalidData,
    InvalidInputError,
    ModelNotFound,
    UnsafeArtifact,
    VersionNotFound,
)
from shipyard.registry import metadata as md
from shipyard.registry.manifest import manifest_from_json, manifest_to_json
from shipyard.registry.store import ArtifactStore, LocalArtifactStore
from shipyard.spec import (
    DEFAULT_ALIAS,
    FileEntry,
    ModelManifest,
    ModelRef,
    NewVersion,
    validate_name,
)

__all__ = [
    "AliasEvent",
    "GcReport",
    "MetadataEvent",
    "ModelRegistry",
    "ModelSummary",
    "ModelVersion",
    "VerifyReport",
]

logger = logging.getLogger(__name__)

MODEL_ROLE = "model.onnx"
GC_GRACE_S = 3600.0
_MUTABLE_FIELDS = ("metrics", "tags", "description", "serving")


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no user database
        return "unknown"


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its immutable manifest and its mutable metadata."""

    name: str
    version: int
    manifest: ModelManifest
    aliases: tuple[str, ...]
    metrics: dict[str, Any]
    tags: dict[str, str]
    description: str | None
    serving: dict[str, Any]
    created_at: datetime

    @property
    def ref(self) -> str:
        """``name:version``."""
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ModelSummary:
    """A model at a glance."""

    name: str
    latest_version: int | None
    n_versions: int
    aliases: dict[str, int]
    updated_at: datetime | None


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias (``new_version`` None: removed)."""

    name: str
    alias: str
    old_version: int | None
    new_version: int | None
    at: datetime
    actor: str
    reason: str


@dataclass(frozen=True)
class MetadataEvent:
    """One change of a version's mutable metadata."""

    ref: str
    field: str
    old: Any
    new: Any
    at: datetime
    actor: str


@dataclass
class VerifyReport:
    """Result of re-hashing every stored file."""

    checked: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No mismatches."""
        return not self.mismatches


@dataclass
class GcReport:
    """Blobs removed (or that would be, in a dry run)."""

    removed: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    dry_run: bool = False


class ModelRegistry:
    """The persistent store of models, versions and aliases.

    Example:
        >>> reg = ModelRegistry.open(load_settings())                   # doctest: +SKIP
        >>> mv = reg.register("iris", new, {"model.onnx": path})         # doctest: +SKIP
        >>> reg.promote("iris:1", "prod"); reg.rollback("iris", "prod")  # doctest: +SKIP
    """

    def __init__(
        self, engine: sa.engine.Engine, store: ArtifactStore, *, location: str = ""
    ) -> None:
        self.engine = engine
        self.store = store
        self.location = location
        self._manifests: dict[str, ModelManifest] = {}

    @classmethod
    def open(cls, settings: Settings) -> ModelRegistry:
        """Open (creating and migrating as needed) the registry that settings name."""
        settings.home.mkdir(parents=True, exist_ok=True)
        engine = md.create_engine(
            settings.metadata_url, busy_timeout_s=settings.registry.busy_timeout_s
        )
        md.migrate(engine)
        return cls(engine, LocalArtifactStore(settings.store_path), location=str(settings.home))

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()

    # ---- transactions -------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    # ---- lookups ------------------------------------------------------------------------

    def _model_id(self, conn: Connection, name: str) -> int:
        row = conn.execute(sa.select(md.models.c.id).where(md.models.c.name == name)).first()
        if row is None:
            raise ModelNotFound(
                f"No model named {name!r} in registry {self.location}.",
                hint="Run `shipyard models list` to see registered names.",
            )
        return int(row[0])

    def _versions_of(self, conn: Connection, model_id: int) -> list[int]:
        rows = conn.execute(
            sa.select(md.versions.c.version)
            .where(md.versions.c.model_id == model_id)
            .order_by(md.versions.c.version)
        )
        return [int(r[0]) for r in rows]

    def _resolve(self, conn: Connection, ref: str | ModelRef) -> tuple[int, str, int]:
        parsed = ModelRef.parse(ref)
        model_id = self._model_id(conn, parsed.name)
        if parsed.version is not None:
            row = conn.execute(
                sa.select(md.versions.c.version).where(
                    md.versions.c.model_id == model_id, md.versions.c.version == parsed.version
                )
            ).first()
            if row is None:
                have = self._versions_of(conn, model_id)
                raise VersionNotFound(
                    f"Model {parsed.name!r} has no version {parsed.version}.",
                    hint=f"Available versions: {', '.join(map(str, have)) or 'none'}.",
                )
            return model_id, parsed.name, parsed.version
        alias = parsed.alias or DEFAULT_ALIAS
        row = conn.execute(
            sa.select(md.aliases.c.version).where(
                md.aliases.c.model_id == model_id, md.aliases.c.alias == alias
            )
        ).first()
        if row is None:
            names = [
                r[0]
                for r in conn.execute(
                    sa.select(md.aliases.c.alias).where(md.aliases.c.model_id == model_id)
                )
            ]
            raise AliasNotFound(
                f"Model {parsed.name!r} has no alias {alias!r}.",
                hint=f"Aliases: {', '.join(sorted(names)) or 'none'}; set one with "
                f"`shipyard models alias {parsed.name}:VERSION {alias}`.",
            )
        return model_id, parsed.name, int(row[0])

    def _manifest(self, sha256: str) -> ModelManifest:
        cached = self._manifests.get(sha256)
        if cached is not None:
            return cached
        data = self.store.read_bytes(sha256)
        if sha256_bytes(data) != sha256:
            raise ArtifactCorrupted(
                f"Manifest blob {sha256[:16]}… must match its sha256. It does not.",
                hint="Run `shipyard models verify`; restore the registry from a backup.",
            )
        manifest = manifest_from_json(data)
        self._manifests[sha256] = manifest
        return manifest

    def _load_version(
        self, conn: Connection, model_id: int, name: str, version: int
    ) -> ModelVersion:
        v = md.versions.c
        row = conn.execute(
            sa.select(
                v.manifest_sha256, v.metrics, v.tags, v.description, v.serving, v.created_at
            ).where(v.model_id == model_id, v.version == version)
        ).one()
        alias_rows = conn.execute(
            sa.select(md.aliases.c.alias)
            .where(md.aliases.c.model_id == model_id, md.aliases.c.version == version)
            .order_by(md.aliases.c.alias)
        )
        return ModelVersion(
            name=name,
            version=version,
            manifest=self._manifest(row.manifest_sha256),
            aliases=tuple(r[0] for r in alias_rows),
            metrics=dict(row.metrics or {}),
            tags=dict(row.tags or {}),
            description=row.description,
            serving=dict(row.serving or {}),
            created_at=_ts(row.created_at),
        )

    def get(self, ref: str | ModelRef) -> ModelVersion:
        """The version a ref names; a bare name means its ``default`` alias.

        Raises:
            ModelNotFound, VersionNotFound, AliasNotFound: the ref names nothing.
            InvalidModelRef, InvalidName: the ref is malformed.
        """
        with self._read() as conn:
            model_id, name, version = self._resolve(conn, ref)
            return self._load_version(conn, model_id, name, version)

    def list_models(self) -> list[ModelSummary]:
        """Every model, sorted by name."""
        out: list[ModelSummary] = []
        with self._read() as conn:
            for mid, name, updated in conn.execute(
                sa.select(md.models.c.id, md.models.c.name, md.models.c.updated_at).order_by(
                    md.models.c.name
                )
            ):
                vers = self._versions_of(conn, mid)
                al = {
                    r.alias: int(r.version)
                    for r in conn.execute(
                        sa.select(md.aliases.c.alias, md.aliases.c.version).where(
                            md.aliases.c.model_id == mid
                        )
                    )
                }
                out.append(
                    ModelSummary(name, vers[-1] if vers else None, len(vers), al, _ts(updated))
                )
        return out

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, oldest first.

        Raises:
            ModelNotFound: no such model.
        """
        validate_name(name)
        with self._read() as conn:
            mid = self._model_id(conn, name)
            return [self._load_version(conn, mid, name, v) for v in self._versions_of(conn, mid)]

    # ---- register -----------------------------------------------------------------------

    def register(
        self,
        name: str,
        new: NewVersion,
        files: Mapping[str, Path],
        *,
        move_default: bool | None = None,
        actor: str | None = None,
        metrics: dict[str, Any] | None = None,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ModelVersion:
        """Store files and manifest as the next version of ``name``.

        ``files`` maps roles to local paths and must include ``"model.onnx"``. A source
        version (no parent in its lineage) moves the ``default`` alias to itself unless
        ``move_default`` is False; a derived version does so only when it is True.

        Raises:
            InvalidName: ``name`` breaks the naming rules.
            DataNotFound: a file does not exist.
            InvalidInputError: ``files`` has no ``"model.onnx"``.
        """
        validate_name(name)
        if MODEL_ROLE not in files:
            raise InvalidInputError(
                f"files must include the role {MODEL_ROLE!r}. Got {sorted(files)} instead."
            )
        for role in files:
            validate_name(role.replace("model.onnx", "model-onnx"), kind="file role")
        entries: dict[str, FileEntry] = {}
        for role, path in files.items():
            p = Path(path)
            if not p.is_file():
                raise DataNotFound(
                    f"File {str(p)!r} must exist to be registered. It was not found."
                )
            digest, size = self.store.put_file(p)
            entries[role] = FileEntry(sha256=digest, size_bytes=size, filename=p.name)
        faults.reach("register.after-blob-write")
        if move_default is None:
            move_default = new.lineage.parent_version is None
        who = _actor(actor)
        for attempt in range(5):
            try:
                return self._commit_version(
                    name, new, entries, move_default, who, metrics, description, tags
                )
            except SAIntegrityError:  # another writer took the number (non-SQLite backends)
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _commit_version(
        self,
        name: str,
        new: NewVersion,
        entries: dict[str, FileEntry],
        move_default: bool,
        actor: str,
        metrics: dict[str, Any] | None,
        description: str | None,
        tags: Mapping[str, str] | None,
    ) -> ModelVersion:
        now = md.now_iso()
        with self._write() as conn:
            row = conn.execute(
                sa.select(md.models.c.id, md.models.c.last_version).where(md.models.c.name == name)
            ).first()
            if row is None:
                mid = int(
                    conn.execute(
                        md.models.insert().values(
                            name=name, last_version=0, created_at=now, updated_at=now
                        )
                    ).inserted_primary_key[0]  # type: ignore[index]
                )
                version = 1
            else:
                mid, version = int(row[0]), int(row[1]) + 1
            conn.execute(
                md.models.update()
                .where(md.models.c.id == mid)
                .values(updated_at=now, last_version=version)
            )
            manifest = ModelManifest(
                name=name,
                version=version,
                signature=new.signature,
                task=new.task,
                framework=new.framework,
                framework_version=new.framework_version,
                opset=new.opset,
                files=entries,
                created_at=_ts(now),
                lineage=new.lineage,
                parity=new.parity,
            )
            manifest_sha, _ = self.store.put_bytes(manifest_to_json(manifest))
            vid = conn.execute(
                md.versions.insert().values(
                    model_id=mid,
                    version=version,
                    manifest_sha256=manifest_sha,
                    created_at=now,
                    actor=actor,
                    description=description,
                    tags=dict(tags or {}),
                    metrics=dict(metrics or {}),
                    serving={},
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            conn.execute(
                md.version_files.insert(),
                [
                    {
                        "version_id": vid,
                        "role": role,
                        "sha256": e.sha256,
                        "size_bytes": e.size_bytes,
                    }
                    for role, e in entries.items()
                ],
            )
            if move_default:
                self._move_alias(conn, mid, DEFAULT_ALIAS, version, actor, "register")
            faults.reach("register.before-metadata-commit")
        faults.reach("register.after-metadata-commit")
        logger.info("Registered %s:%d", name, version)
        return self.get(f"{name}:{version}")

    # ---- aliases ------------------------------------------------------------------------

    def _move_alias(
        self, conn: Connection, mid: int, alias: str, version: int | None, actor: str, reason: str
    ) -> None:
        now = md.now_iso()
        a = md.aliases.c
        old = conn.execute(sa.select(a.version).where(a.model_id == mid, a.alias == alias)).scalar()
        if version is None:
            conn.execute(md.aliases.delete().where(a.model_id == mid, a.alias == alias))
        elif old is None:
            conn.execute(
                md.aliases.insert().values(
                    model_id=mid, alias=alias, version=version, updated_at=now
                )
            )
        else:
            conn.execute(
                md.aliases.update()
                .where(a.model_id == mid, a.alias == alias)
                .values(version=version, updated_at=now)
            )
        conn.execute(
            md.alias_history.insert().values(
                model_id=mid,
                alias=alias,
                old_version=old,
                new_version=version,
                at=now,
                actor=actor,
                reason=reason,
            )
        )
        conn.execute(md.models.update().where(md.models.c.id == mid).values(updated_at=now))

    def set_alias(self, name: str, alias: str, version: int, *, actor: str | None = None) -> None:
        """Point ``alias`` at ``version``.

        Raises:
            ModelNotFound, VersionNotFound: no such model or version.
            InvalidName: the alias breaks the naming rules.
        """
        self.promote(f"{name}:{version}", alias, actor=actor)

    def promote(self, ref: str | ModelRef, alias: str, *, actor: str | None = None) -> ModelVersion:
        """Point ``alias`` at the version ``ref`` names; returns that version."""
        validate_name(alias, kind="alias")
        with self._write() as conn:
            mid, name, version = self._resolve(conn, ref)
            self._move_alias(conn, mid, alias, version, _actor(actor), "promote")
        return self.get(f"{name}:{version}")

    def remove_alias(self, name: str, alias: str, *, actor: str | None = None) -> None:
        """Remove ``alias`` from a model.

        Raises:
            AliasNotFound: the model has no such alias.
        """
        validate_name(alias, kind="alias")
        with self._write() as conn:
            mid, _, _ = self._resolve(conn, f"{name}@{alias}")
            self._move_alias(conn, mid, alias, None, _actor(actor), "remove")

    def rollback(
        self, name: str, alias: str = DEFAULT_ALIAS, *, actor: str | None = None
    ) -> ModelVersion:
        """Move ``alias`` back to where it pointed before its last move.

        Raises:
            AliasNotFound: the alias never pointed anywhere else.
            VersionNotFound: the earlier version has been deleted since.
        """
        validate_name(alias, kind="alias")
        with self._write() as conn:
            mid = self._model_id(conn, name)
            h = md.alias_history.c
            last = conn.execute(
                sa.select(h.old_version, h.new_version)
                .where(h.model_id == mid, h.alias == alias)
                .order_by(h.id.desc())
                .limit(1)
            ).first()
            if last is None or last.old_version is None:
                raise AliasNotFound(
                    f"Alias {name}@{alias} must have pointed at an earlier version to roll back. "
                    "It has not.",
                    hint=f"See `shipyard models history {name}`.",
                )
            target = int(last.old_version)
            exists = conn.execute(
                sa.select(md.versions.c.id).where(
                    md.versions.c.model_id == mid, md.versions.c.version == target
                )
            ).first()
            if exists is None:
                raise VersionNotFound(
                    f"Version {target} of {name!r}, where {alias!r} pointed before, was deleted.",
                    hint=f"Point the alias explicitly: `shipyard models alias {name}:N {alias}`.",
                )
            self._move_alias(conn, mid, alias, target, _actor(actor), "rollback")
        return self.get(f"{name}:{target}")

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every alias move of a model (optionally of one alias), oldest first."""
        with self._read() as conn:
            mid = self._model_id(conn, name)
            h = md.alias_history.c
            stmt = sa.select(h.alias, h.old_version, h.new_version, h.at, h.actor, h.reason).where(
                h.model_id == mid
            )
            if alias is not None:
                stmt = stmt.where(h.alias == alias)
            return [
                AliasEvent(
                    name, r.alias, r.old_version, r.new_version, _ts(r.at), r.actor, r.reason
                )
                for r in conn.execute(stmt.order_by(h.id))
            ]

    # ---- delete and metadata ------------------------------------------------------------

    def delete(self, ref: str | ModelRef, *, force: bool = False, actor: str | None = None) -> None:
        """Delete a version's record (its blobs are reclaimed by :meth:`gc`).

        Raises:
            AliasInUse: an alias points at it and ``force`` is False.
        """
        with self._write() as conn:
            mid, name, version = self._resolve(conn, ref)
            a = md.aliases.c
            holding = [
                r[0]
                for r in conn.execute(
                    sa.select(a.alias).where(a.model_id == mid, a.version == version)
                )
            ]
            if holding and not force:
                raise AliasInUse(
                    f"Version {name}:{version} must have no aliases to be deleted. "
                    f"Aliases {sorted(holding)} point at it.",
                    hint="Move the aliases first, or pass --force to remove them too.",
                )
            who = _actor(actor)
            for alias in holding:
                self._move_alias(conn, mid, alias, None, who, "delete")
            vid = conn.execute(
                sa.select(md.versions.c.id).where(
                    md.versions.c.model_id == mid, md.versions.c.version == version
                )
            ).scalar()
            conn.execute(md.version_files.delete().where(md.version_files.c.version_id == vid))
            conn.execute(md.versions.delete().where(md.versions.c.id == vid))
        logger.info("Deleted %s:%d", name, version)

    def update_metadata(
        self,
        ref: str | ModelRef,
        *,
        metrics: dict[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
        serving: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> ModelVersion:
        """Change a version's mutable metadata; every change is recorded.

        ``metrics``, ``tags`` and ``serving`` are merged into what is there (a key set to
        None is removed); ``description`` replaces.
        """
        changes: dict[str, Any] = {
            "metrics": metrics,
            "tags": tags,
            "description": description,
            "serving": serving,
        }
        with self._write() as conn:
            mid, name, version = self._resolve(conn, ref)
            v = md.versions.c
            row = conn.execute(
                sa.select(v.metrics, v.tags, v.description, v.serving).where(
                    v.model_id == mid, v.version == version
                )
            ).one()
            values: dict[str, Any] = {}
            now = md.now_iso()
            who = _actor(actor)
            for fld in _MUTABLE_FIELDS:
                change = changes[fld]
                if change is None:
                    continue
                old = getattr(row, fld)
                if fld == "description":
                    new: Any = change
                else:
                    new = dict(old or {})
                    for key, value in dict(change).items():
                        if value is None:
                            new.pop(key, None)
                        else:
                            new[key] = value
                if new == old:
                    continue
                values[fld] = new
                conn.execute(
                    md.metadata_events.insert().values(
                        model_id=mid,
                        version=version,
                        field=fld,
                        old=old,
                        new=new,
                        at=now,
                        actor=who,
                    )
                )
            if values:
                conn.execute(
                    md.versions.update()
                    .where(v.model_id == mid, v.version == version)
                    .values(**values)
                )
        return self.get(f"{name}:{version}")

    def metadata_history(self, ref: str | ModelRef) -> list[MetadataEvent]:
        """Every metadata change of a version, oldest first."""
        with self._read() as conn:
            mid, name, version = self._resolve(conn, ref)
            e = md.metadata_events.c
            rows = conn.execute(
                sa.select(e.field, e.old, e.new, e.at, e.actor)
                .where(e.model_id == mid, e.version == version)
                .order_by(e.id)
            )
            return [
                MetadataEvent(f"{name}:{version}", r.field, r.old, r.new, _ts(r.at), r.actor)
                for r in rows
            ]

    # ---- artifacts and integrity --------------------------------------------------------

    def _entry(
        self, ref_or_mv: str | ModelRef | ModelVersion, role: str
    ) -> tuple[ModelVersion, FileEntry]:
        mv = ref_or_mv if isinstance(ref_or_mv, ModelVersion) else self.get(ref_or_mv)
        entry = mv.manifest.files.get(role)
        if entry is None:
            raise DataNotFound(
                f"Version {mv.ref} has no file with role {role!r}. "
                f"It has {sorted(mv.manifest.files)}."
            )
        return mv, entry

    def read_artifact(
        self, ref_or_mv: str | ModelRef | ModelVersion, role: str = MODEL_ROLE
    ) -> bytes:
        """A version's file content, re-hashed before it is returned.

        Raises:
            ArtifactCorrupted: the content does not match its sha256, or is missing.
        """
        mv, entry = self._entry(ref_or_mv, role)
        data = self.store.read_bytes(entry.sha256)
        got = sha256_bytes(data)
        if got != entry.sha256:
            raise ArtifactCorrupted(
                f"File {role!r} of {mv.ref} must have sha256 {entry.sha256[:16]}…. "
                f"Got {got[:16]}… instead: it was changed on disk.",
                hint="Run `shipyard models verify`; restore it from a backup or re-register.",
                details={"ref": mv.ref, "role": role, "expected": entry.sha256, "got": got},
            )
        return data

    def artifact_path(
        self, ref_or_mv: str | ModelRef | ModelVersion, role: str = MODEL_ROLE
    ) -> Path:
        """A local path to a version's file, verified first (local stores only)."""
        mv, entry = self._entry(ref_or_mv, role)
        self.read_artifact(mv, role)
        path = self.store.local_path(entry.sha256)
        if path is None:  # pragma: no cover - remote stores come later
            raise DataNotFound(f"The store for {mv.ref} has no local files; use read_artifact.")
        return path

    def _referenced(self, conn: Connection) -> dict[str, list[tuple[str, str]]]:
        refs: dict[str, list[tuple[str, str]]] = {}
        rows = conn.execute(
            sa.select(
                md.models.c.name,
                md.versions.c.version,
                md.versions.c.manifest_sha256,
                md.versions.c.id,
            ).join(md.versions, md.versions.c.model_id == md.models.c.id)
        ).all()
        for name, version, msha, vid in rows:
            refs.setdefault(msha, []).append((f"{name}:{version}", "manifest"))
            for role, sha in conn.execute(
                sa.select(md.version_files.c.role, md.version_files.c.sha256).where(
                    md.version_files.c.version_id == vid
                )
            ):
                refs.setdefault(sha, []).append((f"{name}:{version}", role))
        return refs

    def verify(self) -> VerifyReport:
        """Re-hash every blob a version references; report mismatches and missing blobs."""
        report = VerifyReport()
        with self._read() as conn:
            refs = self._referenced(conn)
        for sha, users in sorted(refs.items()):
            report.checked += 1
            try:
                got = sha256_bytes(self.store.read_bytes(sha))
            except ArtifactCorrupted:
                got = "missing"
            if got != sha:
                for ref, role in users:
                    report.mismatches.append(
                        {"ref": ref, "role": role, "expected": sha, "got": got}
                    )
        return report

    def gc(self, *, dry_run: bool = False, grace_s: float = GC_GRACE_S) -> GcReport:
        """Remove blobs no version references.

        Blobs newer than ``grace_s`` are kept: a concurrent register writes its blobs
        before it commits the metadata that references them.
        """
        report = GcReport(dry_run=dry_run)
        with self._read() as conn:
            referenced = set(self._referenced(conn))
        now = time.time()
        for sha in list(self.store.iter_hashes()):
            if sha in referenced:
                continue
            path = self.store.local_path(sha)
            if path is not None and grace_s > 0 and now - path.stat().st_mtime < grace_s:
                continue
            size = path.stat().st_size if path is not None else 0
            report.removed.append(sha)
            report.freed_bytes += size
            if not dry_run:
                self.store.delete(sha)
        if not dry_run and isinstance(self.store, LocalArtifactStore):
            self.store.clean_tmp()
        return report

    # ---- export / import ----------------------------------------------------------------

    def export_version(self, ref: str | ModelRef, out: Path) -> Path:
        """Write one version to a ``.tar.gz``: manifest.json, metadata.json, files/<role>."""
        mv = self.get(ref)
        out = Path(out)
        meta = {
            "metrics": mv.metrics,
            "tags": mv.tags,
            "description": mv.description,
            "serving": mv.serving,
        }
        with atomic_writer(out) as fh, tarfile.open(fileobj=fh, mode="w:gz") as tar:

            def add(name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                info.mtime = int(mv.created_at.timestamp())
                tar.addfile(info, io.BytesIO(data))

            add("manifest.json", manifest_to_json(mv.manifest))
            add("metadata.json", json.dumps(meta, sort_keys=True, default=str).encode())
            for role in mv.manifest.files:
                add(f"files/{role}", self.read_artifact(mv, role))
        return out

    def import_archive(
        self, path: Path, *, name: str | None = None, actor: str | None = None
    ) -> ModelVersion:
        """Register a version from an archive made by :meth:`export_version`.

        Every member is checked: only regular files named ``manifest.json``,
        ``metadata.json`` or ``files/<role>``; each file's sha256 must match the manifest.

        Raises:
            DataNotFound: no such archive.
            UnsafeArtifact: a member is a link, device, absolute path or climbs with ``..``.
            ArtifactCorrupted: a file does not match its recorded sha256.
            InvalidData: the archive is not one shipyard wrote.
        """
        path = Path(path)
        if not path.is_file():
            raise DataNotFound(f"Archive {str(path)!r} must exist. It was not found.")
        members: dict[str, bytes] = {}
        try:
            with tarfile.open(path, mode="r:*") as tar:
                for info in tar.getmembers():
                    member = _safe_member_name(info)
                    if info.isdir():
                        continue
                    fh = tar.extractfile(info)
                    if fh is None:  # pragma: no cover - regular files always extract
                        raise InvalidData(f"Archive member {member!r} cannot be read.")
                    members[member] = fh.read()
        except tarfile.TarError as exc:
            raise InvalidData(
                f"Archive {str(path)!r} must be a tar.gz written by shipyard: {exc}"
            ) from exc
        if "manifest.json" not in members:
            raise InvalidData(f"Archive {str(path)!r} must contain manifest.json. It does not.")
        manifest = manifest_from_json(members["manifest.json"])
        meta = json.loads(members.get("metadata.json", b"{}") or b"{}")
        with tempfile.TemporaryDirectory(prefix="shipyard-import-") as tmp:
            files: dict[str, Path] = {}
            for role, entry in manifest.files.items():
                data = members.get(f"files/{role}")
                if data is None:
                    raise InvalidData(f"Archive must contain files/{role}. It does not.")
                got = sha256_bytes(data)
                if got != entry.sha256:
                    raise ArtifactCorrupted(
                        f"Archive file {role!r} must have sha256 {entry.sha256[:16]}…. "
                        f"Got {got[:16]}… instead.",
                        hint="The archive was changed or damaged; export it again.",
                    )
                target = Path(tmp) / f"{len(files)}.bin"
                target.write_bytes(data)
                files[role] = target
            new = NewVersion(
                signature=manifest.signature,
                task=manifest.task,
                framework=manifest.framework,
                framework_version=manifest.framework_version,
                opset=manifest.opset,
                parity=manifest.parity,
                lineage=manifest.lineage,
            )
            tags = {**dict(meta.get("tags") or {}), "imported_from": manifest.ref}
            mv = self.register(
                name or manifest.name,
                new,
                files,
                move_default=True,
                actor=actor,
                metrics=meta.get("metrics") or None,
                description=meta.get("description"),
                tags=tags,
            )
        return mv


def _safe_member_name(info: tarfile.TarInfo) -> str:
    name = info.name
    pure = PurePosixPath(name)
    if not (info.isfile() or info.isdir()):
        raise UnsafeArtifact(
            f"Archive members must be regular files. Got {name!r} of type {info.type!r} instead.",
        )
    if pure.is_absolute() or ".." in pure.parts or name.startswith("\\") or ":" in pure.parts[0]:
        raise UnsafeArtifact(
            f"Archive member paths must stay inside the archive. Got {name!r} instead.",
        )
    if info.isfile() and not (
        name in ("manifest.json", "metadata.json")
        or (len(pure.parts) == 2 and pure.parts[0] == "files")
    ):
        raise UnsafeArtifact(
            f"Archive members must be manifest.json, metadata.json or files/<role>. "
            f"Got {name!r} instead."
        )
    return name

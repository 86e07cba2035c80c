"""ModelRegistry: versioned, immutable model storage with aliases, history and integrity checks.

Registration writes blobs first (staged and fsynced), then commits all metadata in one
transaction; a reader therefore never sees a half-written version, and a process killed at
any moment leaves a registry that opens and loads every listed version. Named fault points
(``_utils.faults``) let the tests kill a real process at each step.

What is immutable: a version's files, signature, task schema and lineage (its manifest,
stored as a blob whose sha256 the database keeps). What may change: metrics, tags,
description and serving settings; every change is recorded with its actor and time.

This module is the public face: every method, the manifest cache and the lifecycle log
lines. The work is done in private modules: ``_types`` (the value objects), ``_sql`` (the
transactions and statements), ``_register`` (the write path of a registration),
``_integrity`` (re-hashing, verify and gc) and ``_archive`` (export and import).

Imports: _types, _sql, _register, _integrity, _archive, store, metadata, manifest, config,
spec, errors, _utils.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from shipyard._utils.crypto import key_provider_from
from shipyard._utils.fs import sha256_bytes
from shipyard.config import Settings
from shipyard.errors import (
    AliasInUse,
    ArtifactCorrupted,
    DataNotFound,
    InvalidInputError,
)
from shipyard.registry import _archive, _audit, _sql
from shipyard.registry import manifest as mf
from shipyard.registry import metadata as md
from shipyard.registry._audit import AuditEvent
from shipyard.registry._integrity import (
    check_blobs,
    referenced,
    sweep,
    verified_bytes,
    verified_path,
)
from shipyard.registry._register import register_version
from shipyard.registry._types import MISSING as MISSING  # importable from here, as before
from shipyard.registry._types import (
    MODEL_ROLE,
    AliasEvent,
    GcReport,
    MetadataEvent,
    ModelSummary,
    ModelVersion,
    Ref,
    VerifyReport,
    check_json_mapping,
    check_tags,
    resolve_actor,
)
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
    "AuditEvent",
    "GcReport",
    "MetadataEvent",
    "ModelRegistry",
    "ModelSummary",
    "ModelVersion",
    "VerifyReport",
]

logger = logging.getLogger(__name__)


def _open_store(settings: Settings) -> LocalArtifactStore:
    """The artifact store with the keys that settings name (see ``_utils.crypto``)."""
    reg = settings.registry
    keys = key_provider_from(reg.encryption_key_env, reg.encryption_key_file)
    return LocalArtifactStore(settings.store_path, keys=keys, encrypt=reg.encrypt)


class ModelRegistry:
    """The persistent store of models, versions and aliases.

    Args:
        engine: A SQLAlchemy engine from :func:`shipyard.registry.metadata.create_engine`,
            already migrated.
        store: Where file contents live.
        location: Shown in error messages (the registry's home).

    Example:
        >>> with ModelRegistry.open(load_settings()) as reg:               # doctest: +SKIP
        ...     mv = reg.register("iris", new, {"model.onnx": path})
        ...     reg.promote(mv.ref, "prod")
        ...     reg.rollback("iris", "prod")
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
        """Open the registry that ``settings`` name, creating and migrating it as needed.

        Args:
            settings: Uses ``metadata_url``, ``store_path``, ``home`` and
                ``registry.busy_timeout_s``.

        Returns:
            An open registry; call :meth:`close` (or use it as a context manager).

        Raises:
            ConfigError: the metadata URL is invalid or the database is newer than this
                shipyard.
        """
        settings.home.mkdir(parents=True, exist_ok=True)
        engine = md.create_engine(
            settings.metadata_url, busy_timeout_s=settings.registry.busy_timeout_s
        )
        try:
            md.migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        try:
            store = _open_store(settings)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, store, location=str(settings.home))

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- lookups ------------------------------------------------------------------------

    def _manifest(self, sha256: str) -> ModelManifest:
        cached = self._manifests.get(sha256)
        if cached is None:
            data = self.store.read_bytes(sha256)
            if sha256_bytes(data) != sha256:
                raise ArtifactCorrupted(
                    f"Manifest blob {sha256[:16]}… must match its sha256. It does not.",
                    hint="Run `shipyard models verify`; restore the registry from a backup.",
                )
            cached = self._manifests[sha256] = mf.from_json(data)
        # callers get their own copy: nothing they do to it can reach the registry's view
        return cached.model_copy(deep=True)

    def get(self, ref: Ref) -> ModelVersion:
        """The version a ref names; a bare name means its ``default`` alias.

        Args:
            ref: ``name``, ``name:3``, ``name@prod`` or a parsed ModelRef.

        Returns:
            The version, with its manifest and current metadata.

        Raises:
            ModelNotFound: no such model.
            VersionNotFound: no such version (the hint lists the versions there are).
            AliasNotFound: no such alias (a bare name needs a ``default`` alias).
            InvalidModelRef: the ref is malformed.
            InvalidName: the name or alias breaks the naming rules.
        """
        with _sql.reading(self.engine) as conn:
            model_id, name, version = _sql.resolve(conn, ref, self.location)
            return _sql.load_version(conn, model_id, name, version, self._manifest)

    def list_models(self) -> list[ModelSummary]:
        """Every model, sorted by name.

        Returns:
            One summary per model (models whose versions were all deleted included).
        """
        with _sql.reading(self.engine) as conn:
            return _sql.model_summaries(conn)

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, oldest first.

        Raises:
            ModelNotFound: no such model.
            InvalidName: ``name`` breaks the naming rules.
        """
        validate_name(name)
        with _sql.reading(self.engine) as conn:
            mid = _sql.model_id(conn, name, self.location)
            return [
                _sql.load_version(conn, mid, name, v, self._manifest)
                for v in _sql.versions_of(conn, mid)
            ]

    # ---- register -----------------------------------------------------------------------

    def register(
        self,
        name: str,
        new: NewVersion,
        files: Mapping[str, Path],
        *,
        move_default: bool | None = None,
        actor: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ModelVersion:
        """Store files and manifest as the next version of ``name``.

        Blobs are written (staged, fsynced) before one transaction records the version, so
        a crash at any point leaves either no trace in the metadata or the whole version.

        Args:
            name: The model name (created on first register).
            new: What the converter knows: signature, task, framework, lineage, parity.
            files: Role -> local path; must include ``"model.onnx"`` (``"source"`` is the
                original artifact, optional).
            move_default: Point ``default`` at the new version. None (the default): only
                for a source version (``new.lineage.parent_version`` is None).
            actor: Who registers; defaults to the OS user.
            metrics: Initial metrics.
            description: Initial description.
            tags: Initial tags.

        Returns:
            The new version.

        Raises:
            InvalidName: ``name`` or a role breaks the naming rules.
            InvalidInputError: ``files`` has no ``"model.onnx"``, or metadata is not JSON.
            DataNotFound: a file does not exist.
            ConflictError: another writer held the registry past the busy timeout.
        """
        version = register_version(
            self.engine,
            self.store,
            name,
            new,
            files,
            move_default=move_default,
            actor=actor,
            metrics=metrics,
            description=description,
            tags=tags,
        )
        return self._registered(name, version)

    def _registered(self, name: str, version: int) -> ModelVersion:
        logger.info("Registered %s:%d", name, version)
        return self.get(f"{name}:{version}")

    # ---- aliases ------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int, *, actor: str | None = None) -> None:
        """Point ``alias`` of model ``name`` at ``version`` (creating or moving it).

        Raises:
            ModelNotFound, VersionNotFound: no such model or version.
            InvalidName: the alias breaks the naming rules.
            InvalidInputError: ``version`` is not a positive integer.
        """
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidInputError(f"A version must be a positive integer. Got {version!r}.")
        self.promote(ModelRef(validate_name(name), version=version), alias, actor=actor)

    def promote(self, ref: Ref, alias: str, *, actor: str | None = None) -> ModelVersion:
        """Point ``alias`` at the version ``ref`` names.

        Args:
            ref: Any ref (``m:3``, ``m@staging``, ``m``).
            alias: The alias to create or move, e.g. ``prod``.
            actor: Who; defaults to the OS user.

        Returns:
            The version the alias now points at.

        Raises:
            ModelNotFound, VersionNotFound, AliasNotFound: the ref names nothing.
            InvalidName: the alias breaks the naming rules.
        """
        validate_name(alias, kind="alias")
        with _sql.writing(self.engine) as conn:
            mid, name, version = _sql.resolve(conn, ref, self.location)
            _sql.move_alias(conn, mid, alias, version, resolve_actor(actor), "promote")
        logger.info("Moved %s@%s to %d", name, alias, version)
        return self.get(ModelRef(name, version=version))

    def remove_alias(self, name: str, alias: str, *, actor: str | None = None) -> None:
        """Remove ``alias`` from a model (recorded; :meth:`rollback` restores it).

        Raises:
            ModelNotFound: no such model.
            AliasNotFound: the model has no such alias.
        """
        validate_name(alias, kind="alias")
        with _sql.writing(self.engine) as conn:
            mid, _, _ = _sql.resolve(
                conn, ModelRef(validate_name(name), alias=alias), self.location
            )
            _sql.move_alias(conn, mid, alias, None, resolve_actor(actor), "remove")

    def rollback(
        self, name: str, alias: str = DEFAULT_ALIAS, *, actor: str | None = None
    ) -> ModelVersion:
        """Undo the last move of ``alias``: point it back where it pointed before.

        The alias history is read as a stack of moves in which each rollback undoes the
        latest move not yet undone, so rolling back twice goes two moves back (it never
        flips back to the version just rolled away from). A removed alias is restored.

        Args:
            name: The model name.
            alias: The alias to move back (``default`` unless given).
            actor: Who; defaults to the OS user.

        Returns:
            The version the alias points at now.

        Raises:
            ModelNotFound: no such model.
            AliasNotFound: the alias has no earlier target to go back to.
            VersionNotFound: the earlier target has been deleted since.
        """
        validate_name(alias, kind="alias")
        with _sql.writing(self.engine) as conn:
            mid = _sql.model_id(conn, validate_name(name), self.location)
            target = _sql.rollback_target(conn, mid, name, alias)
            _sql.check_version(conn, mid, name, target)
            _sql.move_alias(conn, mid, alias, target, resolve_actor(actor), "rollback")
        logger.info("Rolled %s@%s back to %d", name, alias, target)
        return self.get(ModelRef(name, version=target))

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every alias move of a model (optionally of one alias), oldest first.

        Raises:
            ModelNotFound: no such model.
        """
        if alias is not None:
            validate_name(alias, kind="alias")
        with _sql.reading(self.engine) as conn:
            mid = _sql.model_id(conn, validate_name(name), self.location)
            return _sql.alias_events(conn, mid, name, alias)

    # ---- delete and metadata ------------------------------------------------------------

    def delete(self, ref: Ref, *, force: bool = False, actor: str | None = None) -> None:
        """Delete a version's record; its blobs stay until :meth:`gc` reclaims them.

        Version numbers are never reused.

        Args:
            ref: The version to delete (an alias ref names the version it points at).
            force: Also remove the aliases that point at it (each removal is recorded).
            actor: Who; defaults to the OS user.

        Raises:
            AliasInUse: an alias points at it and ``force`` is False.
            ModelNotFound, VersionNotFound, AliasNotFound: the ref names nothing.
        """
        with _sql.writing(self.engine) as conn:
            mid, name, version = _sql.resolve(conn, ref, self.location)
            holding = _sql.aliases_at(conn, mid, version)
            if holding and not force:
                raise AliasInUse(
                    f"Version {name}:{version} must have no aliases to be deleted. "
                    f"Got aliases {holding} pointing at it instead.",
                    hint="Move the aliases first, or pass --force to remove them too.",
                )
            who = resolve_actor(actor)
            for alias in holding:
                _sql.move_alias(conn, mid, alias, None, who, "delete")
            _sql.delete_version(conn, mid, version)
            _audit.record(conn, "delete", f"{name}:{version}", who, {"force": force})
        logger.info("Deleted %s:%d", name, version)

    def update_metadata(
        self,
        ref: Ref,
        *,
        metrics: Mapping[str, Any] | None = None,
        tags: Mapping[str, str | None] | None = None,
        description: str | None = None,
        serving: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> ModelVersion:
        """Change a version's mutable metadata; every change is recorded.

        ``metrics``, ``tags`` and ``serving`` are merged into what is there (a key set to
        None is removed); ``description`` replaces. Files, signature, task and lineage
        cannot change: they are the version.

        Args:
            ref: The version.
            metrics: Metrics to merge.
            tags: Tags to merge (string values; None removes a tag).
            description: The new description.
            serving: Serving settings to merge.
            actor: Who; defaults to the OS user.

        Returns:
            The version with its new metadata.

        Raises:
            ModelNotFound, VersionNotFound, AliasNotFound: the ref names nothing.
            InvalidInputError: a value is not JSON, or a tag is not a string.
        """
        changes: dict[str, Any] = {
            "metrics": None if metrics is None else check_json_mapping(metrics, "metrics"),
            "tags": None if tags is None else check_tags(tags, allow_none=True),
            "description": description,
            "serving": None if serving is None else check_json_mapping(serving, "serving"),
        }
        with _sql.writing(self.engine) as conn:
            mid, name, version = _sql.resolve(conn, ref, self.location)
            _sql.apply_metadata(conn, mid, version, changes, resolve_actor(actor))
        return self.get(ModelRef(name, version=version))

    def metadata_history(self, ref: Ref) -> list[MetadataEvent]:
        """Every metadata change of a version, oldest first.

        Raises:
            ModelNotFound, VersionNotFound, AliasNotFound: the ref names nothing.
        """
        with _sql.reading(self.engine) as conn:
            mid, name, version = _sql.resolve(conn, ref, self.location)
            return _sql.metadata_events(conn, mid, name, version)

    # ---- artifacts and integrity --------------------------------------------------------

    def _entry(self, ref_or_mv: Ref | ModelVersion, role: str) -> tuple[ModelVersion, FileEntry]:
        mv = ref_or_mv if isinstance(ref_or_mv, ModelVersion) else self.get(ref_or_mv)
        entry = mv.manifest.files.get(role)
        if entry is None:
            raise DataNotFound(
                f"Version {mv.ref} must have a file with role {role!r}. "
                f"Got roles {sorted(mv.manifest.files)} instead."
            )
        return mv, entry

    def read_artifact(self, ref_or_mv: Ref | ModelVersion, role: str = MODEL_ROLE) -> bytes:
        """A version's file content, re-hashed before it is returned.

        Args:
            ref_or_mv: A ref, or a ModelVersion already fetched.
            role: ``"model.onnx"`` (default) or ``"source"``.

        Returns:
            The file's bytes, verified against the manifest.

        Raises:
            ArtifactCorrupted: the content does not match its sha256, or is missing.
            DataNotFound: the version has no file with that role.
        """
        mv, entry = self._entry(ref_or_mv, role)
        return verified_bytes(self.store, mv, role, entry)

    def artifact_path(self, ref_or_mv: Ref | ModelVersion, role: str = MODEL_ROLE) -> Path:
        """A local, read-only path to a version's file, re-hashed first.

        Args:
            ref_or_mv: A ref, or a ModelVersion already fetched.
            role: ``"model.onnx"`` (default) or ``"source"``.

        Returns:
            The blob's path in the store. Do not write to it.

        Raises:
            ArtifactCorrupted: the content does not match its sha256, or is missing.
            DataNotFound: no such role, or the store has no local files.
        """
        mv, entry = self._entry(ref_or_mv, role)
        return verified_path(self.store, mv, role, entry)

    def verify(self) -> VerifyReport:
        """Re-hash every blob a version references (files and manifests).

        Returns:
            The number of blobs checked and one entry per damaged or missing file.
        """
        with _sql.reading(self.engine) as conn:
            refs = referenced(conn)
        report = check_blobs(self.store, refs)
        if report.mismatches:
            logger.warning("verify: %d damaged or missing file(s)", len(report.mismatches))
        return report

    def gc(self, *, dry_run: bool = False, grace_s: float = 0.0) -> GcReport:
        """Remove blobs no version references (files and manifests), and stale temp files.

        Runs under the metadata write lock, and :meth:`register` checks its blobs under
        the same lock before it commits (writing again any that gc reclaimed meanwhile),
        so gc never removes a blob that a concurrent register is about to reference.
        Staging files older than an hour are left by killed writers and are removed too.

        Args:
            dry_run: Only report what would be removed.
            grace_s: Also keep unreferenced blobs written less than this many seconds ago
                (extra caution for stores whose listings lag; 0 by default).

        Returns:
            What was (or would be) removed.
        """
        report = GcReport(dry_run=dry_run)
        with _sql.reading(self.engine) if dry_run else _sql.writing(self.engine) as conn:
            sweep(self.store, set(referenced(conn)), report, grace_s=grace_s)
            if not dry_run:
                _audit.record(
                    conn,
                    "gc",
                    "registry",
                    resolve_actor(None),
                    {"removed": len(report.removed), "freed_bytes": report.freed_bytes},
                )
        if isinstance(self.store, LocalArtifactStore):
            report.stale_tmp = len(self.store.stale_tmp()) if dry_run else self.store.clean_tmp()
        if not dry_run and report.removed:
            logger.info("gc removed %d blob(s), %d bytes", len(report.removed), report.freed_bytes)
        return report

    # ---- audit and encryption -----------------------------------------------------------

    def audit_log(
        self,
        *,
        target: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Audit entries, oldest first.

        Args:
            target: Only entries about this model (``name``, ``name:3`` or ``name@alias``).
            action: Only this action (``register``, ``alias.promote``, ``delete``, ...).
            since: Only entries at or after this time (timezone-aware).
            limit: Only the latest ``limit`` entries.
        """
        with _sql.reading(self.engine) as conn:
            return _audit.events(conn, target=target, action=action, since=since, limit=limit)

    def record_audit(
        self,
        action: str,
        target: str,
        *,
        actor: str | None = None,
        source: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append an audit entry for something outside the registry (an admin API call).

        Args:
            action: What, e.g. ``server.load``.
            target: On what, e.g. ``iris:3``.
            actor: Who (a token's name, never the token); the OS user if None.
            source: From where (client address); the audit context's or ``local:<host>``.
            details: Names and numbers only; never secrets.
        """
        with _sql.writing(self.engine) as conn:
            _audit.record(conn, action, target, resolve_actor(actor), details or {}, source=source)

    def encrypt_blobs(self) -> int:
        """Rewrite every plaintext blob encrypted (the store must encrypt); returns how many.

        Raises:
            EncryptionKeyMissing: encryption is not on for this registry.
        """
        if not isinstance(self.store, LocalArtifactStore):  # pragma: no cover - remote later
            raise InvalidInputError("Only a local store can be encrypted in place.")
        with _sql.writing(self.engine) as conn:  # under the write lock: no gc meanwhile
            count = self.store.encrypt_existing()
            _audit.record(conn, "encrypt", "registry", resolve_actor(None), {"blobs": count})
        logger.info("Encrypted %d blob(s) at rest", count)
        return count

    # ---- export / import ----------------------------------------------------------------

    def export_version(self, ref: Ref, out: Path) -> Path:
        """Write one version to a single ``.tar.gz``.

        Members: ``manifest.json`` (the stored manifest), ``metadata.json`` (metrics, tags,
        description, serving) and ``files/<role>`` for every file. Each file is re-hashed
        as it is written; the archive appears atomically, and only if all were intact.

        Args:
            ref: The version to export.
            out: The archive path, or an existing folder to write ``<name>-<version>.tar.gz``
                into.

        Returns:
            The archive's path.

        Raises:
            ArtifactCorrupted: a file does not match its sha256, or is missing.
            ModelNotFound, VersionNotFound, AliasNotFound: the ref names nothing.
        """
        mv = self.get(ref)
        out = _archive.write_archive(mv, out, self.store, self.read_artifact)
        logger.info("Exported %s to %s", mv.ref, out)
        return out

    def import_archive(
        self,
        path: Path,
        *,
        name: str | None = None,
        actor: str | None = None,
        move_default: bool | None = None,
    ) -> ModelVersion:
        """Register a version from an archive made by :meth:`export_version`.

        Every member is checked before anything is stored: only regular files named
        ``manifest.json``, ``metadata.json`` or ``files/<role>``, each at most once; every
        file's sha256 and size must match the manifest. The version is registered as the
        next version of ``name`` (default: the archive's); its lineage is kept, and tags
        ``imported_from`` (the original ref) and ``imported_manifest_sha256`` record where
        it came from. Metrics, tags, description and serving settings come along.

        Args:
            path: The ``.tar.gz`` archive.
            name: Register under this name instead of the archive's.
            actor: Who; defaults to the OS user.
            move_default: As for :meth:`register` (None: only a source version moves it).

        Returns:
            The new version.

        Raises:
            DataNotFound: no such archive.
            UnsafeArtifact: a member is a link or device, has an absolute path, climbs with
                ``..``, is not an expected name, or appears twice.
            ArtifactCorrupted: a file does not match its recorded sha256 or size.
            InvalidData: the archive is not one shipyard wrote.
            ConfigError: the manifest is from a newer shipyard.
        """
        path = Path(path)
        if not path.is_file():
            raise DataNotFound(f"Archive {str(path)!r} must exist. It was not found.")
        if name is not None:
            validate_name(name)
        with _archive.unpack(path) as archive:
            version = register_version(
                self.engine,
                self.store,
                name or archive.manifest.name,
                archive.new,
                archive.files,
                move_default=move_default,
                actor=actor,
                metrics=archive.meta.get("metrics") or None,
                description=archive.meta.get("description"),
                tags=archive.tags,
                serving=archive.meta.get("serving") or None,
                filenames={role: e.filename for role, e in archive.manifest.files.items()},
                action="import",
            )
            mv = self._registered(name or archive.manifest.name, version)
        logger.info("Imported %s from %s as %s", archive.manifest.ref, path, mv.ref)
        return mv

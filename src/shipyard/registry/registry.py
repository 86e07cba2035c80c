"""ModelRegistry: versioned, immutable model storage with aliases, history and integrity checks.

Registration writes blobs first (staged and fsynced), then commits all metadata in one
transaction; a reader therefore never sees a half-written version, and a process killed at
any moment leaves a registry that opens and loads every listed version. Named fault points
(``_utils.faults``) let the tests kill a real process at each step.

What is immutable: a version's files, signature, task schema and lineage (its manifest,
stored as a blob whose sha256 the database keeps). What may change: metrics, tags,
description and serving settings; every change is recorded with its actor and time.

This module owns the transactions, the blob writes of a registration and the logging. The
SQL lives in ``_sql``, the value objects in ``_types``, blob checks in ``_integrity`` and
archives in ``_archive``.

Imports: store, metadata, manifest, _types, _sql, _integrity, _archive, config, spec,
errors, _utils.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import OperationalError as SAOperationalError

from shipyard._utils import faults
from shipyard._utils.fs import sha256_bytes
from shipyard.config import Settings
from shipyard.errors import (
    AliasInUse,
    AliasNotFound,
    ArtifactCorrupted,
    ConflictError,
    DataNotFound,
    InvalidData,
    InvalidInputError,
)
from shipyard.registry import _archive, _sql
from shipyard.registry import manifest as mf
from shipyard.registry import metadata as md
from shipyard.registry._integrity import check_blobs, corrupted, hash_blob, referenced, sweep
from shipyard.registry._types import (
    MISSING,
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
    parse_ts,
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
    "MISSING",
    "MODEL_ROLE",
    "AliasEvent",
    "GcReport",
    "MetadataEvent",
    "ModelRegistry",
    "ModelSummary",
    "ModelVersion",
    "Ref",
    "VerifyReport",
]

logger = logging.getLogger(__name__)

_REGISTER_ATTEMPTS = 5


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
        return cls(engine, LocalArtifactStore(settings.store_path), location=str(settings.home))

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

    # ---- transactions -------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite: the write lock up front)."""
        try:
            with self.engine.connect().execution_options(write=True) as conn, conn.begin():
                yield conn
        except SAOperationalError as exc:
            if "locked" not in str(exc.orig).lower() and "busy" not in str(exc.orig).lower():
                raise
            raise ConflictError(
                "The registry must be free for writing within the busy timeout. "
                "Another writer held it too long.",
                hint="Retry, or raise SHIPYARD_REGISTRY__BUSY_TIMEOUT_S.",
            ) from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

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
        with self._read() as conn:
            model_id, name, version = _sql.resolve(conn, ref, self.location)
            return _sql.load_version(conn, model_id, name, version, self._manifest)

    def list_models(self) -> list[ModelSummary]:
        """Every model, sorted by name.

        Returns:
            One summary per model (models whose versions were all deleted included).
        """
        with self._read() as conn:
            return _sql.model_summaries(conn)

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, oldest first.

        Raises:
            ModelNotFound: no such model.
            InvalidName: ``name`` breaks the naming rules.
        """
        validate_name(name)
        with self._read() as conn:
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
        return self._register(
            name,
            new,
            files,
            move_default=move_default,
            actor=actor,
            metrics=metrics,
            description=description,
            tags=tags,
        )

    def _register(
        self,
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
    ) -> ModelVersion:
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
                    f"File {str(path)!r} (role {role!r}) must exist to be registered. "
                    "It was not found."
                )
        meta = {
            "metrics": check_json_mapping(metrics or {}, "metrics"),
            "tags": check_tags(tags or {}, allow_none=False),
            "serving": check_json_mapping(serving or {}, "serving"),
            "description": description,
        }
        entries: dict[str, FileEntry] = {}
        for role, path in files.items():
            digest, size = self.store.put_file(Path(path))
            filename = (filenames or {}).get(role) or Path(path).name
            entries[role] = FileEntry(sha256=digest, size_bytes=size, filename=filename)
        faults.reach("register.after-blob-write")
        if move_default is None:
            move_default = new.lineage.parent_version is None
        who = resolve_actor(actor)
        for attempt in range(_REGISTER_ATTEMPTS):
            try:
                return self._commit_version(name, new, files, entries, move_default, who, meta)
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
        self,
        name: str,
        new: NewVersion,
        files: Mapping[str, Path],
        entries: dict[str, FileEntry],
        move_default: bool,
        actor: str,
        meta: dict[str, Any],
    ) -> ModelVersion:
        now = md.now_iso()
        with self._write() as conn:
            # gc deletes only under this same write lock, so a blob present now stays
            # present until we commit; one reclaimed since we wrote it is written again
            for role, entry in entries.items():
                if not self.store.exists(entry.sha256):
                    digest, _ = self.store.put_file(Path(files[role]))
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
            manifest_sha, _ = self.store.put_bytes(mf.to_json(manifest))
            _sql.insert_version(
                conn, mid, version, manifest_sha, entries, now=now, actor=actor, meta=meta
            )
            if move_default:
                _sql.move_alias(conn, mid, DEFAULT_ALIAS, version, actor, "register")
            faults.reach("register.before-metadata-commit")
        faults.reach("register.after-metadata-commit")
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
        with self._write() as conn:
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
        with self._write() as conn:
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
        with self._write() as conn:
            mid = _sql.model_id(conn, validate_name(name), self.location)
            previous = _sql.rollback_target(conn, mid, alias)
            if previous is None:
                raise AliasNotFound(
                    f"Alias {name}@{alias} must have an earlier target to roll back to. "
                    "It has none.",
                    hint=f"See `shipyard models history {name} --alias {alias}`; point it "
                    f"explicitly with `shipyard models alias {name}:VERSION {alias}`.",
                )
            target = int(previous)
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
        with self._read() as conn:
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
        with self._write() as conn:
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
        with self._write() as conn:
            mid, name, version = _sql.resolve(conn, ref, self.location)
            _sql.apply_metadata(conn, mid, version, changes, resolve_actor(actor))
        return self.get(ModelRef(name, version=version))

    def metadata_history(self, ref: Ref) -> list[MetadataEvent]:
        """Every metadata change of a version, oldest first.

        Raises:
            ModelNotFound, VersionNotFound, AliasNotFound: the ref names nothing.
        """
        with self._read() as conn:
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
        try:
            data = self.store.read_bytes(entry.sha256)
        except ArtifactCorrupted:
            raise corrupted(mv, role, entry.sha256, MISSING) from None
        got = sha256_bytes(data)
        if got != entry.sha256:
            raise corrupted(mv, role, entry.sha256, got)
        return data

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
        path = self.store.local_path(entry.sha256)
        if path is None:  # pragma: no cover - remote stores come later
            raise DataNotFound(
                f"The store of {mv.ref} must keep local files for a path. It does not.",
                hint="Use read_artifact instead.",
            )
        got = hash_blob(self.store, entry.sha256)
        if got != entry.sha256:
            raise corrupted(mv, role, entry.sha256, got)
        return path

    def verify(self) -> VerifyReport:
        """Re-hash every blob a version references (files and manifests).

        Returns:
            The number of blobs checked and one entry per damaged or missing file.
        """
        with self._read() as conn:
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
        with self._read() if dry_run else self._write() as conn:
            sweep(self.store, set(referenced(conn)), report, grace_s=grace_s)
        if isinstance(self.store, LocalArtifactStore):
            report.stale_tmp = len(self.store.stale_tmp()) if dry_run else self.store.clean_tmp()
        if not dry_run and report.removed:
            logger.info("gc removed %d blob(s), %d bytes", len(report.removed), report.freed_bytes)
        return report

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
            mv = self._register(
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
            )
        logger.info("Imported %s from %s as %s", archive.manifest.ref, path, mv.ref)
        return mv

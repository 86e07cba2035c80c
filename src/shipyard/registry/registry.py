"""ModelRegistry: versioned, immutable model storage with aliases, history and integrity checks.

Registration writes blobs first (staged and fsynced), then commits all metadata in one
transaction; a reader therefore never sees a half-written version, and a process killed at
any moment leaves a registry that opens and loads every listed version. Named fault points
(``_utils.faults``) let the tests kill a real process at each step.

What is immutable: a version's files, signature, task schema and lineage (its manifest,
stored as a blob whose sha256 the database keeps). What may change: metrics, tags,
description and serving settings; every change is recorded with its actor and time.

Imports: store, metadata, manifest, config, spec, errors, _utils.
"""

from __future__ import annotations

import getpass
import hashlib
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
from types import TracebackType
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import OperationalError as SAOperationalError

from shipyard._utils import faults
from shipyard._utils.fs import CHUNK_BYTES, atomic_writer, sha256_bytes, sha256_file
from shipyard.config import Settings
from shipyard.errors import (
    AliasInUse,
    AliasNotFound,
    ArtifactCorrupted,
    ConflictError,
    DataNotFound,
    InvalidData,
    InvalidInputError,
    ModelNotFound,
    UnsafeArtifact,
    VersionNotFound,
)
from shipyard.registry import manifest as mf
from shipyard.registry import metadata as md
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
MISSING = "missing"
_MUTABLE_FIELDS = ("metrics", "tags", "description", "serving")
_MAX_JSON_MEMBER_BYTES = 16 * 1024 * 1024
_REGISTER_ATTEMPTS = 5

Ref = str | ModelRef


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # pragma: no cover - no user database (KeyError, OSError, ...)
        return "unknown"


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _check_json_mapping(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be a mapping. Got {type(value).__name__} instead.")
    out = dict(value)
    try:
        json.dumps(out)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{what} must be JSON-serializable (str keys; numbers, strings, lists, dicts). "
            f"Got an error instead: {exc}."
        ) from None
    return out


def _check_tags(tags: Mapping[str, str | None], *, allow_none: bool) -> dict[str, str | None]:
    out = _check_json_mapping(tags, "tags")
    for key, value in out.items():
        if not isinstance(key, str) or not (
            isinstance(value, str) or (allow_none and value is None)
        ):
            raise InvalidInputError(
                f"Tags must map strings to strings. Got {key!r}: {value!r} instead."
            )
    return out


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its immutable manifest and its mutable metadata.

    Attributes:
        name: The model name.
        version: The number the registry assigned (1, 2, ...).
        manifest: The immutable manifest (files, signature, task, lineage).
        aliases: The aliases pointing at this version, sorted.
        metrics: Mutable: quality metrics, e.g. from ``shipyard evaluate``.
        tags: Mutable: free-form string labels.
        description: Mutable: free text.
        serving: Mutable: per-version serving settings.
        created_at: When it was registered (UTC).
    """

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
    """A model at a glance.

    Attributes:
        name: The model name.
        latest_version: The highest existing version, or None when all were deleted.
        n_versions: How many versions exist.
        aliases: Alias name -> version.
        updated_at: The last register, delete or alias move (UTC).
    """

    name: str
    latest_version: int | None
    n_versions: int
    aliases: dict[str, int]
    updated_at: datetime | None


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias.

    Attributes:
        name: The model name.
        alias: The alias that moved.
        old_version: Where it pointed before (None: it did not exist).
        new_version: Where it points after (None: it was removed).
        at: When (UTC).
        actor: Who.
        reason: ``register``, ``promote``, ``rollback``, ``remove`` or ``delete``.
    """

    name: str
    alias: str
    old_version: int | None
    new_version: int | None
    at: datetime
    actor: str
    reason: str


@dataclass(frozen=True)
class MetadataEvent:
    """One change of a version's mutable metadata.

    Attributes:
        ref: ``name:version``.
        field: ``metrics``, ``tags``, ``description`` or ``serving``.
        old: The value before.
        new: The value after.
        at: When (UTC).
        actor: Who.
    """

    ref: str
    field: str
    old: Any
    new: Any
    at: datetime
    actor: str


@dataclass
class VerifyReport:
    """Result of re-hashing every stored file a version references.

    Attributes:
        checked: How many distinct blobs were hashed.
        mismatches: One entry per (version, role) whose blob is wrong or missing, with
            keys ``ref``, ``role`` (``"manifest"`` for the manifest), ``expected`` and
            ``got`` (a sha256, or ``"missing"``).
    """

    checked: int = 0
    mismatches: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No mismatches."""
        return not self.mismatches


@dataclass
class GcReport:
    """Blobs removed (or that would be, in a dry run).

    Attributes:
        removed: The sha256 of every blob removed.
        freed_bytes: Their total size.
        dry_run: Nothing was actually removed.
        stale_tmp: Staging files of killed writers removed (or found, in a dry run).
    """

    removed: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    dry_run: bool = False
    stale_tmp: int = 0


class _HashingReader:
    """A read-only file wrapper that hashes what is read through it."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self.hash.update(data)
        return data


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

    def _resolve(self, conn: Connection, ref: Ref) -> tuple[int, str, int]:
        parsed = ModelRef.parse(ref)
        model_id = self._model_id(conn, parsed.name)
        if parsed.version is not None:
            self._check_version(conn, model_id, parsed.name, parsed.version)
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

    def _check_version(self, conn: Connection, model_id: int, name: str, version: int) -> None:
        row = conn.execute(
            sa.select(md.versions.c.id).where(
                md.versions.c.model_id == model_id, md.versions.c.version == version
            )
        ).first()
        if row is None:
            have = self._versions_of(conn, model_id)
            raise VersionNotFound(
                f"Model {name!r} has no version {version}.",
                hint=f"Available versions: {', '.join(map(str, have)) or 'none'}.",
            )

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
            model_id, name, version = self._resolve(conn, ref)
            return self._load_version(conn, model_id, name, version)

    def list_models(self) -> list[ModelSummary]:
        """Every model, sorted by name.

        Returns:
            One summary per model (models whose versions were all deleted included).
        """
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
                        sa.select(md.aliases.c.alias, md.aliases.c.version)
                        .where(md.aliases.c.model_id == mid)
                        .order_by(md.aliases.c.alias)
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
            InvalidName: ``name`` breaks the naming rules.
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
            "metrics": _check_json_mapping(metrics or {}, "metrics"),
            "tags": _check_tags(tags or {}, allow_none=False),
            "serving": _check_json_mapping(serving or {}, "serving"),
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
        who = _actor(actor)
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
            row = conn.execute(
                sa.select(md.models.c.id, md.models.c.last_version)
                .where(md.models.c.name == name)
                .with_for_update()
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
            manifest_sha, _ = self.store.put_bytes(mf.to_json(manifest))
            vid = conn.execute(
                md.versions.insert().values(
                    model_id=mid,
                    version=version,
                    manifest_sha256=manifest_sha,
                    created_at=now,
                    actor=actor,
                    description=meta["description"],
                    tags=meta["tags"],
                    metrics=meta["metrics"],
                    serving=meta["serving"],
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
            mid, name, version = self._resolve(conn, ref)
            self._move_alias(conn, mid, alias, version, _actor(actor), "promote")
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
            mid, _, _ = self._resolve(conn, ModelRef(validate_name(name), alias=alias))
            self._move_alias(conn, mid, alias, None, _actor(actor), "remove")

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
            mid = self._model_id(conn, validate_name(name))
            h = md.alias_history.c
            moves: list[tuple[int | None, int | None]] = []
            for r in conn.execute(
                sa.select(h.old_version, h.new_version, h.reason)
                .where(h.model_id == mid, h.alias == alias)
                .order_by(h.id)
            ):
                if r.reason == "rollback":
                    if moves:
                        moves.pop()
                else:
                    moves.append((r.old_version, r.new_version))
            previous = moves[-1][0] if moves else None
            if previous is None:
                raise AliasNotFound(
                    f"Alias {name}@{alias} must have an earlier target to roll back to. "
                    "It has none.",
                    hint=f"See `shipyard models history {name} --alias {alias}`; point it "
                    f"explicitly with `shipyard models alias {name}:VERSION {alias}`.",
                )
            target = int(previous)
            self._check_version(conn, mid, name, target)
            self._move_alias(conn, mid, alias, target, _actor(actor), "rollback")
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
            mid = self._model_id(conn, validate_name(name))
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
            mid, name, version = self._resolve(conn, ref)
            a = md.aliases.c
            holding = sorted(
                r[0]
                for r in conn.execute(
                    sa.select(a.alias).where(a.model_id == mid, a.version == version)
                )
            )
            if holding and not force:
                raise AliasInUse(
                    f"Version {name}:{version} must have no aliases to be deleted. "
                    f"Got aliases {holding} pointing at it instead.",
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
            conn.execute(
                md.models.update().where(md.models.c.id == mid).values(updated_at=md.now_iso())
            )
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
            "metrics": None if metrics is None else _check_json_mapping(metrics, "metrics"),
            "tags": None if tags is None else _check_tags(tags, allow_none=True),
            "description": description,
            "serving": None if serving is None else _check_json_mapping(serving, "serving"),
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
                    for key, value in change.items():
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
        return self.get(ModelRef(name, version=version))

    def metadata_history(self, ref: Ref) -> list[MetadataEvent]:
        """Every metadata change of a version, oldest first.

        Raises:
            ModelNotFound, VersionNotFound, AliasNotFound: the ref names nothing.
        """
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

    def _entry(self, ref_or_mv: Ref | ModelVersion, role: str) -> tuple[ModelVersion, FileEntry]:
        mv = ref_or_mv if isinstance(ref_or_mv, ModelVersion) else self.get(ref_or_mv)
        entry = mv.manifest.files.get(role)
        if entry is None:
            raise DataNotFound(
                f"Version {mv.ref} must have a file with role {role!r}. "
                f"Got roles {sorted(mv.manifest.files)} instead."
            )
        return mv, entry

    def _hash_blob(self, sha256: str) -> str:
        """The blob's actual sha256 (streamed for local stores), or ``"missing"``."""
        path = self.store.local_path(sha256)
        try:
            if path is not None:
                return sha256_file(path)
            return sha256_bytes(self.store.read_bytes(sha256))
        except (FileNotFoundError, ArtifactCorrupted):
            return MISSING

    @staticmethod
    def _corrupted(mv: ModelVersion, role: str, expected: str, got: str) -> ArtifactCorrupted:
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
            raise self._corrupted(mv, role, entry.sha256, MISSING) from None
        got = sha256_bytes(data)
        if got != entry.sha256:
            raise self._corrupted(mv, role, entry.sha256, got)
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
        got = self._hash_blob(entry.sha256)
        if got != entry.sha256:
            raise self._corrupted(mv, role, entry.sha256, got)
        return path

    def _referenced(self, conn: Connection) -> dict[str, list[tuple[str, str]]]:
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

    def verify(self) -> VerifyReport:
        """Re-hash every blob a version references (files and manifests).

        Returns:
            The number of blobs checked and one entry per damaged or missing file.
        """
        report = VerifyReport()
        with self._read() as conn:
            refs = self._referenced(conn)
        for sha, users in sorted(refs.items()):
            report.checked += 1
            got = self._hash_blob(sha)
            if got != sha:
                for ref, role in sorted(users):
                    report.mismatches.append(
                        {"ref": ref, "role": role, "expected": sha, "got": got}
                    )
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
            referenced = set(self._referenced(conn))
            now = time.time()
            for sha in list(self.store.iter_hashes()):
                if sha in referenced:
                    continue
                path = self.store.local_path(sha)
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
                if not dry_run:
                    self.store.delete(sha)
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
                self._add_file(tar, info(f"files/{role}", entry.size_bytes), mv, role, entry)
        logger.info("Exported %s to %s", mv.ref, out)
        return out

    def _add_file(
        self,
        tar: tarfile.TarFile,
        ti: tarfile.TarInfo,
        mv: ModelVersion,
        role: str,
        entry: FileEntry,
    ) -> None:
        path = self.store.local_path(entry.sha256)
        if path is None:  # pragma: no cover - remote stores come later
            tar.addfile(ti, io.BytesIO(self.read_artifact(mv, role)))
            return
        try:
            with open(path, "rb") as src:
                reader = _HashingReader(src)
                tar.addfile(ti, reader)
                reader.read()  # a longer file must not pass the hash check
        except FileNotFoundError:
            raise self._corrupted(mv, role, entry.sha256, MISSING) from None
        except OSError as exc:  # tarfile: "unexpected end of data" (file shrank)
            raise self._corrupted(mv, role, entry.sha256, f"short file ({exc})") from exc
        got = reader.hash.hexdigest()
        if got != entry.sha256:
            raise self._corrupted(mv, role, entry.sha256, got)

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
            mv = self._register(
                name or manifest.name,
                new,
                {role: p for role, (p, _, _) in staged.items()},
                move_default=move_default,
                actor=actor,
                metrics=meta.get("metrics") or None,
                description=meta.get("description"),
                tags=tags,
                serving=meta.get("serving") or None,
                filenames={role: e.filename for role, e in manifest.files.items()},
            )
        logger.info("Imported %s from %s as %s", manifest.ref, path, mv.ref)
        return mv


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

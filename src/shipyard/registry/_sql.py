"""The registry's SQL: its transactions, and every statement it runs on an open connection.

Lookups (models, versions, refs), the rows that record a version, alias moves and their
history, and metadata changes. Nothing here touches the artifact store or logs; blobs and
logging stay with ModelRegistry (and ``_register``).

Imports: metadata, _types, spec, errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError as SAOperationalError

from shipyard.errors import AliasNotFound, ConflictError, ModelNotFound, VersionNotFound
from shipyard.registry import _audit
from shipyard.registry import metadata as md
from shipyard.registry._types import (
    AliasEvent,
    MetadataEvent,
    ModelSummary,
    ModelVersion,
    Ref,
    parse_ts,
)
from shipyard.spec import DEFAULT_ALIAS, FileEntry, ModelManifest, ModelRef

__all__ = [
    "alias_events",
    "aliases_at",
    "apply_metadata",
    "check_version",
    "delete_version",
    "insert_version",
    "load_version",
    "metadata_events",
    "model_id",
    "model_summaries",
    "move_alias",
    "next_version",
    "reading",
    "resolve",
    "rollback_target",
    "versions_of",
    "writing",
]

_MUTABLE_FIELDS = ("metrics", "tags", "description", "serving")

# ---- transactions -------------------------------------------------------------------------


@contextmanager
def writing(engine: sa.engine.Engine) -> Iterator[Connection]:
    """A write transaction (``BEGIN IMMEDIATE`` on SQLite: the write lock up front)."""
    try:
        with engine.connect().execution_options(write=True) as conn, conn.begin():
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
def reading(engine: sa.engine.Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


# ---- lookups ------------------------------------------------------------------------------


def model_id(conn: Connection, name: str, location: str) -> int:
    """The model's row id; ``location`` names the registry in the ModelNotFound message."""
    row = conn.execute(sa.select(md.models.c.id).where(md.models.c.name == name)).first()
    if row is None:
        raise ModelNotFound(
            f"No model named {name!r} in registry {location}.",
            hint="Run `shipyard models list` to see registered names.",
        )
    return int(row[0])


def versions_of(conn: Connection, model_id: int) -> list[int]:
    rows = conn.execute(
        sa.select(md.versions.c.version)
        .where(md.versions.c.model_id == model_id)
        .order_by(md.versions.c.version)
    )
    return [int(r[0]) for r in rows]


def resolve(conn: Connection, ref: Ref, location: str) -> tuple[int, str, int]:
    """``(model id, name, version)`` for a ref; a bare name means its ``default`` alias."""
    parsed = ModelRef.parse(ref)
    mid = model_id(conn, parsed.name, location)
    if parsed.version is not None:
        check_version(conn, mid, parsed.name, parsed.version)
        return mid, parsed.name, parsed.version
    alias = parsed.alias or DEFAULT_ALIAS
    row = conn.execute(
        sa.select(md.aliases.c.version).where(
            md.aliases.c.model_id == mid, md.aliases.c.alias == alias
        )
    ).first()
    if row is None:
        names = [
            r[0]
            for r in conn.execute(sa.select(md.aliases.c.alias).where(md.aliases.c.model_id == mid))
        ]
        raise AliasNotFound(
            f"Model {parsed.name!r} has no alias {alias!r}.",
            hint=f"Aliases: {', '.join(sorted(names)) or 'none'}; set one with "
            f"`shipyard models alias {parsed.name}:VERSION {alias}`.",
        )
    return mid, parsed.name, int(row[0])


def check_version(conn: Connection, model_id: int, name: str, version: int) -> None:
    row = conn.execute(
        sa.select(md.versions.c.id).where(
            md.versions.c.model_id == model_id, md.versions.c.version == version
        )
    ).first()
    if row is None:
        have = versions_of(conn, model_id)
        raise VersionNotFound(
            f"Model {name!r} has no version {version}.",
            hint=f"Available versions: {', '.join(map(str, have)) or 'none'}.",
        )


def load_version(
    conn: Connection,
    model_id: int,
    name: str,
    version: int,
    manifest: Callable[[str], ModelManifest],
) -> ModelVersion:
    """The version's row as a ModelVersion; ``manifest`` loads a manifest by its sha256."""
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
        manifest=manifest(row.manifest_sha256),
        aliases=tuple(r[0] for r in alias_rows),
        metrics=dict(row.metrics or {}),
        tags=dict(row.tags or {}),
        description=row.description,
        serving=dict(row.serving or {}),
        created_at=parse_ts(row.created_at),
    )


def model_summaries(conn: Connection) -> list[ModelSummary]:
    out: list[ModelSummary] = []
    for mid, name, updated in conn.execute(
        sa.select(md.models.c.id, md.models.c.name, md.models.c.updated_at).order_by(
            md.models.c.name
        )
    ):
        vers = versions_of(conn, mid)
        al = {
            r.alias: int(r.version)
            for r in conn.execute(
                sa.select(md.aliases.c.alias, md.aliases.c.version)
                .where(md.aliases.c.model_id == mid)
                .order_by(md.aliases.c.alias)
            )
        }
        out.append(ModelSummary(name, vers[-1] if vers else None, len(vers), al, parse_ts(updated)))
    return out


# ---- versions -----------------------------------------------------------------------------


def next_version(conn: Connection, name: str, now: str) -> tuple[int, int]:
    """Take the next version number of ``name`` (creating the model): ``(model id, version)``."""
    row = conn.execute(
        sa.select(md.models.c.id, md.models.c.last_version)
        .where(md.models.c.name == name)
        .with_for_update()
    ).first()
    if row is None:
        mid = int(
            conn.execute(
                md.models.insert().values(name=name, last_version=0, created_at=now, updated_at=now)
            ).inserted_primary_key[0]  # type: ignore[index]
        )
        version = 1
    else:
        mid, version = int(row[0]), int(row[1]) + 1
    conn.execute(
        md.models.update().where(md.models.c.id == mid).values(updated_at=now, last_version=version)
    )
    return mid, version


def insert_version(
    conn: Connection,
    mid: int,
    version: int,
    manifest_sha: str,
    entries: dict[str, FileEntry],
    *,
    now: str,
    actor: str,
    meta: dict[str, Any],
) -> None:
    """Record a version and its files (``meta``: metrics, tags, description, serving)."""
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


def aliases_at(conn: Connection, mid: int, version: int) -> list[str]:
    """The aliases pointing at a version, sorted."""
    a = md.aliases.c
    return sorted(
        r[0]
        for r in conn.execute(sa.select(a.alias).where(a.model_id == mid, a.version == version))
    )


def delete_version(conn: Connection, mid: int, version: int) -> None:
    """Delete a version's rows (its aliases must be gone already)."""
    vid = conn.execute(
        sa.select(md.versions.c.id).where(
            md.versions.c.model_id == mid, md.versions.c.version == version
        )
    ).scalar()
    conn.execute(md.version_files.delete().where(md.version_files.c.version_id == vid))
    conn.execute(md.versions.delete().where(md.versions.c.id == vid))
    conn.execute(md.models.update().where(md.models.c.id == mid).values(updated_at=md.now_iso()))


# ---- aliases ------------------------------------------------------------------------------


def move_alias(
    conn: Connection, mid: int, alias: str, version: int | None, actor: str, reason: str
) -> None:
    """Point ``alias`` at ``version`` (None removes it), and record the move."""
    now = md.now_iso()
    a = md.aliases.c
    old = conn.execute(sa.select(a.version).where(a.model_id == mid, a.alias == alias)).scalar()
    if version is None:
        conn.execute(md.aliases.delete().where(a.model_id == mid, a.alias == alias))
    elif old is None:
        conn.execute(
            md.aliases.insert().values(model_id=mid, alias=alias, version=version, updated_at=now)
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
    name = conn.execute(sa.select(md.models.c.name).where(md.models.c.id == mid)).scalar()
    _audit.record(conn, f"alias.{reason}", f"{name}@{alias}", actor, {"old": old, "new": version})


def rollback_target(conn: Connection, mid: int, name: str, alias: str) -> int:
    """Where ``alias`` pointed before its latest move not yet rolled back.

    The history is read as a stack of moves; each rollback pops the move it undid.
    AliasNotFound when there is no earlier target.
    """
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
            f"Alias {name}@{alias} must have an earlier target to roll back to. It has none.",
            hint=f"See `shipyard models history {name} --alias {alias}`; point it "
            f"explicitly with `shipyard models alias {name}:VERSION {alias}`.",
        )
    return int(previous)


def alias_events(conn: Connection, mid: int, name: str, alias: str | None) -> list[AliasEvent]:
    h = md.alias_history.c
    stmt = sa.select(h.alias, h.old_version, h.new_version, h.at, h.actor, h.reason).where(
        h.model_id == mid
    )
    if alias is not None:
        stmt = stmt.where(h.alias == alias)
    return [
        AliasEvent(name, r.alias, r.old_version, r.new_version, parse_ts(r.at), r.actor, r.reason)
        for r in conn.execute(stmt.order_by(h.id))
    ]


# ---- mutable metadata ---------------------------------------------------------------------


def apply_metadata(
    conn: Connection, mid: int, version: int, changes: dict[str, Any], actor: str
) -> None:
    """Merge ``changes`` (field -> change, None: unchanged) into a version; record each."""
    v = md.versions.c
    row = conn.execute(
        sa.select(v.metrics, v.tags, v.description, v.serving).where(
            v.model_id == mid, v.version == version
        )
    ).one()
    values: dict[str, Any] = {}
    now = md.now_iso()
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
                actor=actor,
            )
        )
    if values:
        conn.execute(
            md.versions.update().where(v.model_id == mid, v.version == version).values(**values)
        )
        name = conn.execute(sa.select(md.models.c.name).where(md.models.c.id == mid)).scalar()
        _audit.record(
            conn, "metadata.update", f"{name}:{version}", actor, {"fields": sorted(values)}
        )


def metadata_events(conn: Connection, mid: int, name: str, version: int) -> list[MetadataEvent]:
    e = md.metadata_events.c
    rows = conn.execute(
        sa.select(e.field, e.old, e.new, e.at, e.actor)
        .where(e.model_id == mid, e.version == version)
        .order_by(e.id)
    )
    return [
        MetadataEvent(f"{name}:{version}", r.field, r.old, r.new, parse_ts(r.at), r.actor)
        for r in rows
    ]

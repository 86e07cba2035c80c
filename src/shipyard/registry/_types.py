"""The registry's value objects (versions, summaries, events, reports) and their value checks.

``ModelRegistry`` returns these; ``shipyard.registry`` re-exports the public ones.

Imports: spec, errors.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shipyard.errors import InvalidInputError
from shipyard.spec import ModelManifest, ModelRef

__all__ = [
    "MISSING",
    "MODEL_ROLE",
    "AliasEvent",
    "GcReport",
    "MetadataEvent",
    "ModelSummary",
    "ModelVersion",
    "Ref",
    "VerifyReport",
    "check_json_mapping",
    "check_tags",
    "parse_ts",
    "resolve_actor",
]

MODEL_ROLE = "model.onnx"
MISSING = "missing"

Ref = str | ModelRef


def resolve_actor(actor: str | None) -> str:
    if actor:
        return actor
    from shipyard.registry._audit import context_actor

    if ctx := context_actor():
        return ctx
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # pragma: no cover - no user database (KeyError, OSError, ...)
        return "unknown"


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def check_json_mapping(value: Mapping[str, Any], what: str) -> dict[str, Any]:
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


def check_tags(tags: Mapping[str, str | None], *, allow_none: bool) -> dict[str, str | None]:
    out = check_json_mapping(tags, "tags")
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

"""The immutable per-version manifest: JSON encoding, decoding and schema migrations.

A manifest is written once, as canonical JSON (sorted keys), into the blob store; its
sha256 is kept in the metadata database. Documents written by an older shipyard carry a
lower ``schema_version`` and are upgraded on read, one step at a time, by the functions
in :data:`MIGRATIONS`. A document from a newer shipyard is refused with a ConfigError.

Imports: spec, errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from shipyard.errors import ArtifactCorrupted, ConfigError
from shipyard.spec import MANIFEST_SCHEMA_VERSION, ModelManifest

__all__ = ["MIGRATIONS", "from_json", "migrate_document", "to_json"]

Migration = Callable[[dict[str, Any]], dict[str, Any]]

#: manifest schema_version N -> the function turning an N document into an N + 1 document
MIGRATIONS: dict[int, Migration] = {}


def to_json(manifest: ModelManifest) -> bytes:
    """Encode a manifest as canonical JSON bytes.

    Keys are sorted, so equal manifests encode (and therefore hash) equally.

    Args:
        manifest: The manifest to encode.

    Returns:
        UTF-8 JSON bytes.
    """
    doc = manifest.model_dump(mode="json")
    return json.dumps(doc, sort_keys=True, indent=1).encode("utf-8")


def migrate_document(
    doc: dict[str, Any], *, target: int = MANIFEST_SCHEMA_VERSION
) -> dict[str, Any]:
    """Upgrade a decoded manifest document to schema ``target``, one step at a time.

    A document with no ``schema_version`` is taken as version 1.

    Args:
        doc: The decoded JSON object.
        target: The schema version to reach (this shipyard's, by default).

    Returns:
        The upgraded document (``schema_version`` set to ``target``).

    Raises:
        ConfigError: the document is from a newer shipyard, or a migration step is missing.
        ArtifactCorrupted: ``schema_version`` is not a positive integer.
    """
    raw = doc.get("schema_version", 1)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise ArtifactCorrupted(
            f"A manifest's schema_version must be a positive integer. Got {raw!r} instead.",
            hint="Run `shipyard models verify`; restore the registry from a backup.",
        )
    version = raw
    if version > target:
        raise ConfigError(
            f"A manifest's schema_version must be at most {target} for this shipyard. "
            f"Got {version} instead.",
            hint="Upgrade shipyard to read this registry or archive.",
        )
    while version < target:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ConfigError(
                f"Manifest schema_version {version} must have a migration to {version + 1}. "
                "None is registered.",
                hint="This shipyard cannot read manifests that old; upgrade through an "
                "intermediate release.",
            )
        doc = step(dict(doc))
        version += 1
        doc["schema_version"] = version
    return doc


def from_json(data: bytes) -> ModelManifest:
    """Decode a manifest, migrating older schema versions forward.

    Args:
        data: JSON bytes, as written by :func:`to_json` (of this or an older shipyard).

    Returns:
        The validated manifest at this shipyard's schema version.

    Raises:
        ConfigError: the manifest is from a newer shipyard.
        ArtifactCorrupted: the document is not a valid manifest.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactCorrupted(f"A manifest must be valid JSON. Got an error: {exc}.") from exc
    if not isinstance(doc, dict):
        raise ArtifactCorrupted(
            f"A manifest must be a JSON object. Got {type(doc).__name__} instead."
        )
    doc = migrate_document(doc)
    try:
        return ModelManifest.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ArtifactCorrupted(
            f"A manifest must match the manifest schema. Field {where!r}: {first['msg']}."
        ) from exc

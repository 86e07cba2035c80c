"""The immutable per-version manifest: JSON encoding, decoding and schema migrations.

Imports: spec, errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from shipyard.errors import ArtifactCorrupted, ConfigError
from shipyard.spec import MANIFEST_SCHEMA_VERSION, ModelManifest

__all__ = ["MIGRATIONS", "manifest_from_json", "manifest_to_json"]

#: manifest schema_version N -> function turning an N document into an N + 1 document
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def manifest_to_json(manifest: ModelManifest) -> bytes:
    """Canonical JSON bytes (sorted keys), so equal manifests hash equally."""
    return json.dumps(manifest.model_dump(mode="json"), sort_keys=True, indent=1).encode("utf-8")


def manifest_from_json(data: bytes) -> ModelManifest:
    """Decode a manifest, migrating older schema versions forward.

    Raises:
        ConfigError: the manifest is from a newer shipyard.
        ArtifactCorrupted: the document is not a valid manifest.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactCorrupted(f"A manifest must be valid JSON: {exc}") from exc
    version = int(doc.get("schema_version", 1))
    if version > MANIFEST_SCHEMA_VERSION:
        raise ConfigError(
            f"A manifest's schema_version must be at most {MANIFEST_SCHEMA_VERSION}. "
            f"Got {version} instead.",
            hint="Upgrade shipyard to read this registry.",
        )
    while version < MANIFEST_SCHEMA_VERSION:
        doc = MIGRATIONS[version](doc)
        version += 1
        doc["schema_version"] = version
    try:
        return ModelManifest.model_validate(doc)
    except ValidationError as exc:
        raise ArtifactCorrupted(f"A manifest must match the manifest schema: {exc}") from exc

"""The versioned model registry: metadata in SQL, files in a content-addressed store."""

from __future__ import annotations

from shipyard.registry.registry import (
    AliasEvent,
    GcReport,
    MetadataEvent,
    ModelRegistry,
    ModelSummary,
    ModelVersion,
    VerifyReport,
)
from shipyard.registry.store import ArtifactStore, LocalArtifactStore

__all__ = [
    "AliasEvent",
    "ArtifactStore",
    "GcReport",
    "LocalArtifactStore",
    "MetadataEvent",
    "ModelRegistry",
    "ModelSummary",
    "ModelVersion",
    "VerifyReport",
]

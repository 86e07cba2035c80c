"""The versioned model registry: metadata in SQL, files in a content-addressed store."""

from __future__ import annotations

from shipyard.registry._audit import audit_context
from shipyard.registry.registry import (
    AliasEvent,
    AuditEvent,
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
    "AuditEvent",
    "GcReport",
    "LocalArtifactStore",
    "MetadataEvent",
    "ModelRegistry",
    "ModelSummary",
    "ModelVersion",
    "VerifyReport",
    "audit_context",
]

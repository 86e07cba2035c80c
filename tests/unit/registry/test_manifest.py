from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shipyard.errors import ArtifactCorrupted, ConfigError
from shipyard.registry import manifest as mf
from shipyard.spec import MANIFEST_SCHEMA_VERSION, FileEntry, Lineage, ModelManifest

from .conftest import tiny_new


def _manifest() -> ModelManifest:
    new = tiny_new(Lineage(parent_version=1, transformation="int8", parameters={"k": 1}))
    return ModelManifest(
        name="m",
        version=2,
        signature=new.signature,
        framework="onnx",
        files={"model.onnx": FileEntry(sha256="a" * 64, size_bytes=3, filename="m.onnx")},
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        lineage=new.lineage,
    )


def test_round_trip_is_lossless_and_canonical() -> None:
    m = _manifest()
    data = mf.to_json(m)
    assert mf.from_json(data) == m
    assert mf.to_json(mf.from_json(data)) == data  # stable bytes -> stable sha256
    assert json.loads(data)["schema_version"] == MANIFEST_SCHEMA_VERSION


def test_a_manifest_from_a_newer_shipyard_is_a_clear_config_error() -> None:
    doc = json.loads(mf.to_json(_manifest()))
    doc["schema_version"] = MANIFEST_SCHEMA_VERSION + 1
    with pytest.raises(ConfigError, match="at most") as info:
        mf.from_json(json.dumps(doc).encode())
    assert "Upgrade shipyard" in (info.value.hint or "")


def test_older_documents_are_migrated_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    def v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
        doc["framework"] = doc.pop("engine")
        return doc

    def v2_to_v3(doc: dict[str, Any]) -> dict[str, Any]:
        doc["touched"] = True
        return doc

    monkeypatch.setitem(mf.MIGRATIONS, 1, v1_to_v2)
    monkeypatch.setitem(mf.MIGRATIONS, 2, v2_to_v3)
    out = mf.migrate_document({"schema_version": 1, "engine": "onnx"}, target=3)
    assert out == {"schema_version": 3, "framework": "onnx", "touched": True}
    # no schema_version at all is the first schema
    assert mf.migrate_document({"engine": "x"}, target=2)["framework"] == "x"


def test_a_missing_migration_step_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="migration"):
        mf.migrate_document({"schema_version": 1}, target=2)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{not json", "valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"schema_version": "one"}', "positive integer"),
        (b'{"schema_version": 0}', "positive integer"),
        (b'{"schema_version": 1, "name": "m"}', "manifest schema"),
    ],
)
def test_malformed_manifests_are_artifact_corrupted(data: bytes, match: str) -> None:
    with pytest.raises(ArtifactCorrupted, match=match):
        mf.from_json(data)

"""Every setting has a description (its attribute docstring), a type and a default."""

from __future__ import annotations

from pydantic import BaseModel

from shipyard.config import Settings


def _walk(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str | None]]:
    rows: list[tuple[str, str | None]] = []
    for name, field in model.model_fields.items():
        rows.append((prefix + name, field.description))
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(_walk(ann, prefix + name + "."))
    return rows


def test_every_setting_is_documented() -> None:
    undocumented = [name for name, desc in _walk(Settings) if not desc]
    assert undocumented == []

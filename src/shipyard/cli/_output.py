"""Output for the CLI: tables and messages for people, JSON for scripts; diagnostics to stderr."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import click


def to_jsonable(value: Any) -> Any:
    """Turn dataclasses, pydantic models, paths, datetimes and numpy values into JSON types."""
    import dataclasses

    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return value


def emit_json(value: Any) -> None:
    """Write ``value`` as indented JSON to stdout."""
    click.echo(json.dumps(to_jsonable(value), indent=2, sort_keys=False, default=str))


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table for people (rich), one row per item."""
    from rich.console import Console
    from rich.table import Table

    tab = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        tab.add_column(col)
    for row in rows:
        tab.add_row(*("" if v is None else str(v) for v in row))
    Console(soft_wrap=True).print(tab)


def kv(title: str | None, pairs: Sequence[tuple[str, Any]]) -> None:
    """Print ``key: value`` lines under an optional bold title."""
    if title:
        click.secho(title, bold=True)
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        click.echo(f"  {key.ljust(width)}  {'' if value is None else value}")


def info(message: str) -> None:
    """A progress or status line for people (stderr, so stdout stays clean for --json)."""
    click.echo(message, err=True)


class Bar:
    """What :func:`progress` yields: call it to advance; set the total once it is known."""

    def __init__(self, bar: Any = None, task: Any = None) -> None:
        self._bar, self._task = bar, task

    def __call__(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def set_total(self, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def update(self, done: int, total: int, description: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total, description=description)


@contextmanager
def progress(description: str, total: int | None, enabled: bool = True) -> Iterator[Bar]:
    """A rich progress bar on stderr (nothing when not ``enabled``)."""
    if not enabled:
        yield Bar()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        yield Bar(bar, bar.add_task(description, total=total))

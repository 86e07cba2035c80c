"""``shipyard tokens create|list|revoke``: API tokens with scopes.

The token string is printed once, at creation; only its hash is stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from shipyard.cli import _output as out

if TYPE_CHECKING:
    from shipyard.security import TokenStore

json_option = click.option("--json", "json_out", is_flag=True, help="Print JSON.")


def _state(ctx: click.Context) -> Any:
    return ctx.find_root().obj


@contextmanager
def _open(ctx: click.Context) -> Iterator[TokenStore]:
    from shipyard.api import open_token_store

    store = open_token_store(_state(ctx).settings())
    try:
        yield store
    finally:
        store.close()


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@click.group()
def tokens() -> None:
    """Create, list and revoke API tokens."""


@tokens.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(["infer", "read", "feedback", "admin"]),
    help="Scope to grant (repeatable).",
)
@click.option("--expires-in", type=float, default=None, help="Lifetime in seconds.")
@json_option
@click.pass_context
def create(
    ctx: click.Context, name: str, scopes: tuple[str, ...], expires_in: float | None, json_out: bool
) -> None:
    """Create a token; its secret is printed once and never again."""
    with _open(ctx) as store:
        raw, info = store.create(name, scopes, expires_in_s=expires_in)
    if json_out or _state(ctx).json:
        out.emit_json({**info.to_dict(), "token": raw})
        return
    click.echo(raw)
    click.echo(
        f"Token {info.token_id} ({', '.join(sorted(info.scopes))}). "
        "Store it now: it is not shown again.",
        err=True,
    )


@tokens.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context, json_out: bool) -> None:
    """List tokens (never their secrets)."""
    with _open(ctx) as store:
        infos = store.list()
    if json_out or _state(ctx).json:
        out.emit_json([i.to_dict() for i in infos])
        return
    rows = [
        [
            i.token_id,
            i.name,
            ",".join(sorted(i.scopes)),
            _when(i.created_at),
            _when(i.expires_at),
            "revoked" if i.revoked_at is not None else "active",
            _when(i.last_used_at),
        ]
        for i in infos
    ]
    out.table(
        "API tokens", ["id", "name", "scopes", "created", "expires", "state", "last used"], rows
    )


@tokens.command("revoke")
@click.argument("token_id")
@json_option
@click.pass_context
def revoke(ctx: click.Context, token_id: str, json_out: bool) -> None:
    """Revoke a token by id; servers stop accepting it within 1 s."""
    with _open(ctx) as store:
        info = store.revoke(token_id)
    if json_out or _state(ctx).json:
        out.emit_json(info.to_dict())
        return
    out.info(f"Revoked token {info.token_id} ({info.name}).")

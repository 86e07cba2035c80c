"""``shipyard audit``: the registry's append-only audit log (who, what, when, from where)."""

from __future__ import annotations

import click

from shipyard.cli import _output as out


@click.command()
@click.option("--model", "target", default=None, help="Only entries about this model or ref.")
@click.option("--action", default=None, help="Only this action, e.g. register, alias.promote.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the latest N.")
@click.option("--json", "json_out", is_flag=True, help="Print JSON.")
@click.pass_context
def audit(
    ctx: click.Context, target: str | None, action: str | None, limit: int | None, json_out: bool
) -> None:
    """Show registry changes and admin calls, oldest first."""
    from shipyard import api

    state = ctx.find_root().obj
    rows = api.audit_log(target=target, action=action, limit=limit, settings=state.settings())
    if json_out or state.json:
        out.emit_json(rows)
        return
    out.table(
        "audit log",
        ["at", "actor", "source", "action", "target"],
        [(r["at"], r["actor"], r["source"], r["action"], r["target"]) for r in rows],
    )

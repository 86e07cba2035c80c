"""``shipyard models ...``: register, list, show, alias, rollback, rm, verify, gc, export."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shipyard.cli import _output as out
from shipyard.errors import InvalidInputError

if TYPE_CHECKING:
    from shipyard.registry import ModelRegistry, ModelVersion


def _state(ctx: click.Context) -> Any:
    return ctx.find_root().obj


def _json(ctx: click.Context, local: bool) -> bool:
    return bool(local or _state(ctx).json)


@contextmanager
def _open(ctx: click.Context) -> Iterator[ModelRegistry]:
    from shipyard.api import open_registry

    reg = open_registry(_state(ctx).settings())
    try:
        yield reg
    finally:
        reg.close()


def _version_dict(mv: ModelVersion) -> dict[str, Any]:
    return {
        "name": mv.name,
        "version": mv.version,
        "ref": mv.ref,
        "aliases": list(mv.aliases),
        "created_at": mv.created_at,
        "description": mv.description,
        "tags": dict(mv.tags),
        "metrics": mv.metrics,
        "serving": mv.serving,
        "manifest": mv.manifest,
    }


json_option = click.option("--json", "json_out", is_flag=True, help="Print JSON.")


@click.group()
def models() -> None:
    """Register, list and manage model versions."""


@models.command("register")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Model name: lower-case letters, digits, . _ -")
@click.option(
    "--framework",
    default="auto",
    show_default=True,
    help="onnx, sklearn, xgboost, lightgbm, torchscript, keras, tensorflow, or auto.",
)
@click.option(
    "--sample-input",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Inputs for the parity check (.npy, .npz, .csv, .parquet); generated when absent.",
)
@click.option(
    "--task",
    type=click.Choice(["classification", "regression", "embedding", "other"]),
    help="Override the detected task.",
)
@click.option(
    "--atol", type=float, default=1e-4, show_default=True, help="Parity: absolute tolerance."
)
@click.option(
    "--rtol", type=float, default=1e-3, show_default=True, help="Parity: relative tolerance."
)
@click.option("--allow-mismatch", is_flag=True, help="Register even if the parity check fails.")
@click.option(
    "--trust-pickle",
    is_flag=True,
    help="Allow loading a pickle/joblib file. Loading a pickle RUNS CODE from the file: "
    "use only for files whose author you trust.",
)
@click.option("--no-source", is_flag=True, help="Do not keep the original artifact.")
@click.option("--description", default=None, help="A free-text description.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tags (repeatable).")
@json_option
@click.pass_context
def register_cmd(
    ctx: click.Context,
    path: Path,
    name: str,
    framework: str,
    sample_input: Path | None,
    task: str | None,
    atol: float,
    rtol: float,
    allow_mismatch: bool,
    trust_pickle: bool,
    no_source: bool,
    description: str | None,
    tags: tuple[str, ...],
    json_out: bool,
) -> None:
    """Convert PATH to ONNX, prove numeric parity, and register it as a new version of NAME."""
    from shipyard.api import register

    tag_map: dict[str, str] = {}
    for item in tags:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"A tag must look like KEY=VALUE. Got {item!r} instead.")
        tag_map[key] = value
    if not _json(ctx, json_out):
        out.info(f"Converting {path} and checking parity...")
    with _open(ctx) as reg:
        mv = register(
            path,
            name=name,
            framework=framework,
            sample_input=sample_input,
            task=task,
            atol=atol,
            rtol=rtol,
            allow_mismatch=allow_mismatch,
            trust_pickle=trust_pickle,
            keep_source=not no_source,
            description=description,
            tags=tag_map or None,
            registry=reg,
        )
    if _json(ctx, json_out):
        out.emit_json(_version_dict(mv))
        return
    parity = mv.manifest.parity
    click.echo(
        f"Registered {mv.ref} ({mv.manifest.framework}, aliases: {', '.join(mv.aliases) or '-'})"
    )
    if parity is not None:
        if parity.skipped_reason:
            click.echo(
                f"  parity: not compared ({parity.skipped_reason}); the model loads and runs"
            )
        else:
            verdict = "passed" if parity.passed else "FAILED (registered with --allow-mismatch)"
            click.echo(
                f"  parity: {verdict}: max abs error {parity.max_abs_error:.3g}, "
                f"max rel error {parity.max_rel_error:.3g} on {parity.n_samples} samples"
            )


@models.command("list")
@json_option
@click.pass_context
def list_cmd(ctx: click.Context, json_out: bool) -> None:
    """List models with their latest version and aliases."""
    with _open(ctx) as reg:
        summaries = reg.list_models()
    if _json(ctx, json_out):
        out.emit_json(summaries)
        return
    if not summaries:
        click.echo("No models yet. Register one: shipyard models register PATH --name NAME")
        return
    out.table(
        None,
        ["name", "latest", "versions", "aliases", "updated"],
        [
            (
                s.name,
                s.latest_version,
                s.n_versions,
                " ".join(f"{a}->{v}" for a, v in sorted(s.aliases.items())),
                s.updated_at.strftime("%Y-%m-%d %H:%M") if s.updated_at else "",
            )
            for s in summaries
        ],
    )


@models.command("show")
@click.argument("ref")
@click.option("--versions", "all_versions", is_flag=True, help="List every version of the model.")
@json_option
@click.pass_context
def show_cmd(ctx: click.Context, ref: str, all_versions: bool, json_out: bool) -> None:
    """Show one version (REF) or, with --versions, all versions of a model."""
    from shipyard.spec import ModelRef

    with _open(ctx) as reg:
        if all_versions:
            versions = reg.list_versions(ModelRef.parse(ref).name)
            if _json(ctx, json_out):
                out.emit_json([_version_dict(v) for v in versions])
                return
            out.table(
                ref,
                ["version", "aliases", "framework", "lineage", "created"],
                [
                    (
                        v.version,
                        " ".join(v.aliases),
                        v.manifest.framework,
                        v.manifest.lineage.describe(),
                        v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    )
                    for v in versions
                ],
            )
            return
        mv = reg.get(ref)
    if _json(ctx, json_out):
        out.emit_json(_version_dict(mv))
        return
    m = mv.manifest
    out.kv(
        mv.ref,
        [
            ("aliases", ", ".join(mv.aliases) or "-"),
            ("framework", f"{m.framework} {m.framework_version or ''}".strip()),
            ("task", m.task.task.value),
            (
                "classes",
                ", ".join(str(c) for c in m.task.class_labels) if m.task.class_labels else None,
            ),
            ("opset", m.opset),
            ("lineage", m.lineage.describe()),
            ("created", m.created_at.isoformat()),
            ("description", mv.description),
        ],
    )
    click.secho("  inputs", bold=True)
    for t in m.signature.inputs:
        click.echo(f"    {t.name}: {t.dtype.value} {t.wire_shape()}")
    click.secho("  outputs", bold=True)
    for t in m.signature.outputs:
        click.echo(f"    {t.name}: {t.dtype.value} {t.wire_shape()}")
    click.secho("  files", bold=True)
    for role, entry in m.files.items():
        click.echo(f"    {role}: sha256:{entry.sha256[:16]}… {entry.size_bytes} bytes")
    if m.parity is not None:
        p = m.parity
        verdict = (
            "skipped: " + p.skipped_reason
            if p.skipped_reason
            else ("passed" if p.passed else "FAILED")
        )
        click.echo(
            f"  parity: {verdict} (max abs {p.max_abs_error:.3g}, atol {p.atol}, rtol {p.rtol})"
        )
    if mv.metrics:
        click.secho("  metrics", bold=True)
        for key, value in _flatten(mv.metrics):
            click.echo(f"    {key}: {value}")


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, name + "."))
        elif isinstance(value, list) and len(value) > 8:
            rows.append((name, f"[{len(value)} items]"))
        elif isinstance(value, float):
            rows.append((name, f"{value:.4f}"))
        else:
            rows.append((name, value))
    return rows


@models.command("alias")
@click.argument("ref")
@click.argument("alias")
@click.pass_context
def alias_cmd(ctx: click.Context, ref: str, alias: str) -> None:
    """Point ALIAS of a model at the version REF names (e.g. `iris:3 prod`)."""
    with _open(ctx) as reg:
        mv = reg.promote(ref, alias)
    click.echo(f"{mv.name}@{alias} -> {mv.version}")


@models.command("promote")
@click.argument("ref")
@click.option("--to", "alias", required=True, help="The alias to move, e.g. prod.")
@click.pass_context
def promote_cmd(ctx: click.Context, ref: str, alias: str) -> None:
    """Move an alias to REF's version (the same as `alias REF ALIAS`)."""
    with _open(ctx) as reg:
        mv = reg.promote(ref, alias)
    click.echo(f"{mv.name}@{alias} -> {mv.version}")


@models.command("unalias")
@click.argument("name")
@click.argument("alias")
@click.pass_context
def unalias_cmd(ctx: click.Context, name: str, alias: str) -> None:
    """Remove ALIAS from model NAME."""
    with _open(ctx) as reg:
        reg.remove_alias(name, alias)
    click.echo(f"removed {name}@{alias}")


@models.command("rollback")
@click.argument("name")
@click.option("--alias", default="default", show_default=True, help="The alias to move back.")
@click.pass_context
def rollback_cmd(ctx: click.Context, name: str, alias: str) -> None:
    """Move an alias back to the version it pointed at before its last move."""
    with _open(ctx) as reg:
        mv = reg.rollback(name, alias)
    click.echo(f"{name}@{alias} -> {mv.version} (rolled back)")


@models.command("history")
@click.argument("name")
@click.option("--alias", default=None, help="Only this alias.")
@json_option
@click.pass_context
def history_cmd(ctx: click.Context, name: str, alias: str | None, json_out: bool) -> None:
    """Show the history of alias moves of model NAME."""
    with _open(ctx) as reg:
        events = reg.alias_history(name, alias)
    if _json(ctx, json_out):
        out.emit_json(events)
        return
    out.table(
        f"{name}: alias moves",
        ["time", "alias", "from", "to", "actor"],
        [
            (e.at.strftime("%Y-%m-%d %H:%M:%S"), e.alias, e.old_version, e.new_version, e.actor)
            for e in events
        ],
    )


@models.command("rm")
@click.argument("ref")
@click.option("--force", is_flag=True, help="Delete even if aliases point at it (removes them).")
@click.pass_context
def rm_cmd(ctx: click.Context, ref: str, force: bool) -> None:
    """Delete a version (blobs are reclaimed later by `models gc`)."""
    with _open(ctx) as reg:
        mv = reg.get(ref)
        reg.delete(mv.ref, force=force)
    click.echo(f"deleted {mv.ref}")


@models.command("verify")
@json_option
@click.pass_context
def verify_cmd(ctx: click.Context, json_out: bool) -> None:
    """Re-hash every stored file and report mismatches (exit 5 when any)."""
    from shipyard.errors import ArtifactCorrupted

    with _open(ctx) as reg:
        report = reg.verify()
    bad = list(report.mismatches)
    if _json(ctx, json_out):
        out.emit_json(report)
    else:
        click.echo(f"checked {report.checked} files: {len(bad)} problem(s)")
        for item in bad:
            click.echo(f"  {item}")
    if bad:
        raise ArtifactCorrupted(
            f"Every stored file must match its sha256. {len(bad)} did not.",
            hint="Restore the registry from a backup or re-import the affected versions.",
        )


@models.command("gc")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@json_option
@click.pass_context
def gc_cmd(ctx: click.Context, dry_run: bool, json_out: bool) -> None:
    """Remove stored files that no version references."""
    with _open(ctx) as reg:
        report = reg.gc(dry_run=dry_run)
    if _json(ctx, json_out):
        out.emit_json(report)
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(report.removed)} blob(s), {report.freed_bytes} bytes")


@models.command("export")
@click.argument("ref")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Archive path (.tar.gz).",
)
@click.pass_context
def export_cmd(ctx: click.Context, ref: str, out_path: Path) -> None:
    """Write one version (files, manifest, metadata) to a single archive."""
    with _open(ctx) as reg:
        path = reg.export_version(ref, out_path)
    click.echo(f"exported {ref} to {path}")


@models.command("import")
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Register under this name instead of the archive's.")
@json_option
@click.pass_context
def import_cmd(ctx: click.Context, archive: Path, name: str | None, json_out: bool) -> None:
    """Import a version from an archive made by `models export` (hashes are checked)."""
    with _open(ctx) as reg:
        mv = reg.import_archive(archive, name=name)
    if _json(ctx, json_out):
        out.emit_json(_version_dict(mv))
        return
    click.echo(f"imported {archive} as {mv.ref}")


@models.command("encrypt")
@json_option
@click.pass_context
def encrypt_cmd(ctx: click.Context, json_out: bool) -> None:
    """Encrypt every plaintext blob at rest (needs SHIPYARD_REGISTRY__ENCRYPT=true and a key)."""
    from shipyard import api

    count = api.encrypt_registry(settings=_state(ctx).settings())
    if _json(ctx, json_out):
        out.emit_json({"encrypted_blobs": count})
        return
    click.echo(f"encrypted {count} blob(s)")

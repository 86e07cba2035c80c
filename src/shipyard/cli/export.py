"""``shipyard export REF --edge --out DIR``: a minimal bundle for small devices."""

from __future__ import annotations

from pathlib import Path

import click

from shipyard.cli import _output as out


@click.command()
@click.argument("ref")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Bundle folder (--edge) or archive path (.tar.gz).",
)
@click.option(
    "--edge",
    is_flag=True,
    help="Write an edge bundle: model.onnx, run.py (onnxruntime + numpy only), "
    "requirements.txt, manifest.json with sha256 sums.",
)
@click.option("--force", is_flag=True, help="Replace an existing, non-empty bundle folder.")
@click.option("--json", "json_out", is_flag=True, help="Print JSON.")
@click.pass_context
def export(
    ctx: click.Context, ref: str, out_path: Path, edge: bool, force: bool, json_out: bool
) -> None:
    """Export REF: an edge bundle (--edge), or else a registry archive like `models export`."""
    from shipyard import api

    state = ctx.find_root().obj
    settings = state.settings()
    if not edge:
        reg = api.open_registry(settings)
        try:
            path = reg.export_version(ref, out_path)
        finally:
            reg.close()
        if json_out or state.json:
            out.emit_json({"ref": ref, "path": str(path), "format": "archive"})
        else:
            click.echo(f"exported {ref} to {path}")
        return
    bundle = api.export_edge(ref, out_path, force=force, settings=settings)
    if json_out or state.json:
        out.emit_json({**bundle.to_dict(), "format": "edge"})
        return
    out.table(
        f"edge bundle of {bundle.ref} in {bundle.path} ({bundle.size_bytes} bytes)",
        ["file", "sha256"],
        sorted(bundle.files.items()),
    )
    click.echo(
        f"run it: pip install -r {bundle.path}/requirements.txt && "
        f"python {bundle.path}/run.py INPUT.npy"
    )

"""``shipyard predict REF --data FILE --out FILE``: offline batch scoring with a progress bar."""

from __future__ import annotations

from pathlib import Path

import click

from shipyard.cli import _output as out


def _count_rows(path: Path) -> int | None:
    """Rows in a data file, cheaply when the format says so (Parquet metadata); else None."""
    if path.suffix.lower() in (".parquet", ".pq") and path.is_file():
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    return None


@click.command()
@click.argument("ref")
@click.option(
    "--data", required=True, type=click.Path(path_type=Path), help="CSV, Parquet or .npz input."
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Output file; format from extension.",
)
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary.")
@click.pass_context
def predict(
    ctx: click.Context, ref: str, data: Path, out_path: Path, batch_size: int, json_out: bool
) -> None:
    """Score every row of --data with REF and write --out (streaming, so big files work)."""
    from shipyard.api import predict as run

    state = ctx.find_root().obj
    quiet = json_out or state.json or state.quiet
    with out.progress(f"scoring {data.name}", _count_rows(data), enabled=not quiet) as advance:
        summary = run(
            ref, data, out_path, batch_size=batch_size, progress=advance, settings=state.settings()
        )
    if json_out or state.json:
        out.emit_json(summary)
        return
    click.echo(f"wrote {summary.rows} predictions to {summary.out}")

"""``shipyard serve REF [REF ...]``: serve registered models over REST and gRPC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from shipyard.errors import ConfigError


def _models_from_config(path: Path) -> list[str]:
    """``models = ["iris@prod", "digits:3"]`` from a serve config file (TOML)."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Serve config {str(path)!r} must be readable TOML: {exc}") from exc
    models = data.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError(
            f"'models' in {str(path)!r} must be a list of refs. Got {models!r} instead.",
            hint='Write: models = ["iris@prod", "digits:3"]',
        )
    return models


@click.command()
@click.argument("refs", nargs=-1)
@click.option("--host", default=None, help="Public interface (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Public REST port (default 8710).")
@click.option(
    "--grpc-port", type=int, default=None, help="Public gRPC port (default 8711; 0 = off)."
)
@click.option(
    "--management-port",
    type=int,
    default=None,
    help="Management REST port (default 8712, loopback).",
)
@click.option(
    "--models-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="A TOML file with `models = [refs...]` (settings go in --config).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    refs: tuple[str, ...],
    host: str | None,
    port: int | None,
    grpc_port: int | None,
    management_port: int | None,
    models_file: Path | None,
) -> None:
    """Serve REFs (NAME, NAME:VERSION or NAME@ALIAS) until Ctrl-C or SIGTERM.

    Open Inference Protocol (KServe V2) REST on --port and gRPC on --grpc-port; load,
    unload and the repository index on --management-port, bound to 127.0.0.1.
    """
    from shipyard.api import serve as run
    from shipyard.logs import configure_logging

    state: Any = ctx.find_root().obj
    settings = state.settings()
    all_refs = list(refs) + (_models_from_config(models_file) if models_file else [])
    level = "DEBUG" if state.verbose > 1 else "INFO"
    configure_logging(settings.logging.model_copy(update={"level": level}))
    run(
        all_refs,
        settings=settings,
        host=host,
        port=port,
        grpc_port=grpc_port,
        management_port=management_port,
    )

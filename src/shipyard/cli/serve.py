"""``shipyard serve REF [REF ...]``: serve registered models over REST and gRPC."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click

from shipyard.errors import ConfigError

_MODEL_KEYS = {"ref", "batching", "runtime"}


def read_serve_config(path: Path) -> tuple[list[str], dict[str, Any], dict[str, dict[str, Any]]]:
    """Parse a serve config: models (with per-model settings) and global setting overrides.

    ```toml
    models = ["digits:3"]            # plain refs, or tables:
    [[models]]
    ref = "iris@prod"
    batching = { max_batch_size = 16 }
    runtime = { intra_op_threads = 2 }

    [server]                          # any settings section applies to the whole server
    port = 9000
    ```

    Returns:
        (refs, settings overrides, {ref: {"batching": ..., "runtime": ...}}).

    Raises:
        ConfigError: unreadable TOML or a malformed model entry.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Serve config {str(path)!r} must be readable TOML: {exc}") from exc
    models = data.pop("models", [])
    if not isinstance(models, list):
        raise ConfigError(
            f"'models' in {str(path)!r} must be a list. Got {type(models).__name__} instead.",
            hint='Write: models = ["iris@prod"] or [[models]] tables with ref = "...".',
        )
    refs: list[str] = []
    per_model: dict[str, dict[str, Any]] = {}
    for entry in models:
        if isinstance(entry, str):
            refs.append(entry)
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("ref"), str):
            raise ConfigError(
                f"Each model in {str(path)!r} must be a ref string or a table with 'ref'. "
                f"Got {entry!r} instead."
            )
        unknown = sorted(set(entry) - _MODEL_KEYS)
        if unknown:
            raise ConfigError(
                f"A model table takes only {sorted(_MODEL_KEYS)}. Got {unknown} instead.",
            )
        refs.append(entry["ref"])
        per_model[entry["ref"]] = {k: v for k, v in entry.items() if k != "ref"}
    return refs, data, per_model


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
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="A serve config (TOML): models with per-model batching/threads, plus settings.",
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="PEM certificate: serve REST and gRPC over TLS.",
)
@click.option(
    "--tls-key",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="PEM private key of --tls-cert.",
)
@click.option(
    "--tls-client-ca",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="PEM CA: require client certificates it signed (mutual TLS).",
)
@click.option(
    "--alerts",
    "alerts_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Alert rules and webhooks (TOML), evaluated while serving (monitoring.alerts_file).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    refs: tuple[str, ...],
    host: str | None,
    port: int | None,
    grpc_port: int | None,
    management_port: int | None,
    config_file: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
    alerts_file: Path | None,
) -> None:
    """Serve REFs (NAME, NAME:VERSION or NAME@ALIAS) until Ctrl-C or SIGTERM.

    Open Inference Protocol (KServe V2) REST on --port and gRPC on --grpc-port; load,
    unload and the repository index on --management-port, bound to 127.0.0.1.
    """
    from shipyard.api import serve as run
    from shipyard.config import with_overrides
    from shipyard.logs import configure_logging

    state: Any = ctx.find_root().obj
    settings = state.settings()
    all_refs = list(refs)
    per_model: dict[str, dict[str, Any]] = {}
    if config_file is not None:
        file_refs, overrides, per_model = read_serve_config(config_file)
        all_refs += [r for r in file_refs if r not in all_refs]
        if overrides:
            settings = with_overrides(settings, overrides)
    tls = {"tls_cert": tls_cert, "tls_key": tls_key, "tls_client_ca": tls_client_ca}
    if any(v is not None for v in tls.values()):
        settings = with_overrides(
            settings, {"security": {k: str(v) for k, v in tls.items() if v is not None}}
        )
    if alerts_file is not None:  # checked when the server starts: a bad file stops it
        settings = with_overrides(settings, {"monitoring": {"alerts_file": str(alerts_file)}})
    level = "DEBUG" if state.verbose > 1 else "INFO"
    configure_logging(settings.logging.model_copy(update={"level": level}))
    run(
        all_refs,
        settings=settings,
        host=host,
        port=port,
        grpc_port=grpc_port,
        management_port=management_port,
        model_settings=per_model,
    )

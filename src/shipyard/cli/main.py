"""The ``shipyard`` command: a click group, THE error boundary, and lazily loaded commands.

Every ShipyardError becomes one line on stderr (``error[code]: message``), a hint line,
and an exit code from :data:`EXIT_CODES`; the traceback is shown only with ``-v``.
Subcommand modules are imported only when their command runs, so ``shipyard --help``
stays fast (no numpy, onnxruntime or starlette).

Imports: errors, config, logs; api lazily.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from shipyard import errors

__all__ = ["EXIT_CODES", "cli", "exit_code_for", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_INVALID = 5
EXIT_UNEXPECTED = 70

#: Error class → exit code; the most specific base listed wins (checked in MRO order).
EXIT_CODES: dict[type[errors.ShipyardError], int] = {
    errors.NotFoundError: EXIT_NOT_FOUND,
    errors.ConflictError: EXIT_CONFLICT,
    errors.InvalidInputError: EXIT_INVALID,
    errors.ConversionError: EXIT_INVALID,
    errors.IntegrityError: EXIT_INVALID,
    errors.ShipyardError: EXIT_ERROR,
}


def exit_code_for(exc: errors.ShipyardError) -> int:
    """The documented exit code of an error."""
    for klass in type(exc).__mro__:
        if klass in EXIT_CODES:
            return EXIT_CODES[klass]
    return EXIT_ERROR  # pragma: no cover - ShipyardError is always in the MRO


# name -> (module, attribute, short help); modules are imported on first use only
COMMANDS: dict[str, tuple[str, str, str]] = {
    "audit": ("shipyard.cli.audit", "audit", "Show the audit log of registry and admin changes."),
    "models": ("shipyard.cli.models", "models", "Register, list and manage model versions."),
    "optimize": ("shipyard.cli.optimize", "optimize", "Build and gate fp16/int8/pruned variants."),
    "monitor": ("shipyard.cli.monitor", "monitor", "Feed labels; read live quality."),
    "evaluate": ("shipyard.cli.evaluate", "evaluate", "Measure a version's quality on a dataset."),
    "export": ("shipyard.cli.export", "export", "Export a version (--edge: a bundle for devices)."),
    "predict": ("shipyard.cli.predict", "predict", "Score a whole data file offline."),
    "quickstart": ("shipyard.cli.quickstart", "quickstart", "Run the whole path on tiny models."),
    "serve": ("shipyard.cli.serve", "serve", "Serve models over REST (OIP V2) and gRPC."),
    "tokens": ("shipyard.cli.tokens", "tokens", "Create, list and revoke API tokens."),
    "tune": ("shipyard.cli.tune", "tune", "Measure and store the best serving settings."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        command: click.Command = getattr(module, entry[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class State:
    """Global options, carried in ``ctx.obj``."""

    def __init__(self, verbose: int, quiet: bool, json_out: bool, config: Path | None) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.json = json_out
        self.config = config
        self._settings: Any = None

    def settings(self) -> Any:
        """Settings loaded once, from the config file and the environment."""
        if self._settings is None:
            from shipyard.config import load_settings

            self._settings = load_settings(config_file=self.config)
        return self._settings


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More output; -v also shows tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.option("--json", "json_out", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A shipyard.toml settings file.",
)
@click.version_option(package_name="shipyard", prog_name="shipyard")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, json_out: bool, config: Path | None) -> None:
    """Shipyard: from a trained model to a fast, secure, monitored service.

    Models live in a versioned registry under $SHIPYARD_HOME (default ~/.shipyard).
    Refs are NAME (the 'default' alias), NAME:VERSION or NAME@ALIAS.
    """
    from shipyard.config import LoggingSettings
    from shipyard.logs import configure_logging

    level = "DEBUG" if verbose > 1 else "INFO" if verbose == 1 else "WARNING"
    if quiet:
        level = "ERROR"
    configure_logging(LoggingSettings(level=level))
    ctx.obj = State(verbose, quiet, json_out, config)


def _render_error(exc: errors.ShipyardError, verbose: int) -> None:
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    click.secho(f"error[{exc.code}]: {exc.message}", fg="red", err=True)
    if exc.hint:
        click.echo(f"  hint: {exc.hint}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (the console script calls ``sys.exit`` on it)."""
    args = sys.argv[1:] if argv is None else argv
    verbose = sum(a.count("v") for a in args if a.startswith("-") and set(a[1:]) == {"v"}) + (
        1 if "--verbose" in args else 0
    )
    try:
        cli.main(args=args, prog_name="shipyard", standalone_mode=False)
    except errors.ShipyardError as exc:
        _render_error(exc, verbose)
        return exit_code_for(exc)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_ERROR
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else EXIT_ERROR
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    except Exception as exc:  # the boundary: nothing unexpected escapes as a raw traceback
        logging.getLogger("shipyard").debug("unexpected error", exc_info=True)
        if verbose:
            traceback.print_exception(exc, file=sys.stderr)
        click.secho(f"error[unexpected]: {type(exc).__name__}: {exc}", fg="red", err=True)
        click.echo("  hint: rerun with -v for the traceback, and report it as a bug.", err=True)
        return EXIT_UNEXPECTED
    return EXIT_OK

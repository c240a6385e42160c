"""The `diffbalance` command: a thin Typer shell over the library.

Each subcommand lives in its own module under `diffbalance.cli` and registers itself on `app`; it parses and
validates options, writes its resolved config to its output folder, then calls one library function.
A `DiffbalanceError` becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from diffbalance.errors import DiffbalanceError

app = typer.Typer(
    name="diffbalance",
    help="Rebalance imbalanced image datasets with diffusion models, and measure whether it helps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

@app.callback()
def _root() -> None:
    """Rebalance imbalanced image datasets with diffusion models, and measure whether it helps."""


# subcommand modules; each does `@app.command(...)` on import
COMMAND_MODULES = (
    "diffbalance.cli.run",
    "diffbalance.cli.make_lt",
    "diffbalance.cli.rebalance",
    "diffbalance.cli.train_generator",
    "diffbalance.cli.fid",
)


def _load_commands() -> None:
    for module in COMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a missing dependency, not a missing subcommand module
                raise


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    _load_commands()
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as done:
        if done.code not in (0, None):
            raise
    except DiffbalanceError as err:
        fail(str(err))
    except KeyboardInterrupt:
        typer.echo("interrupted: outputs written so far are complete; run the same command again to resume", err=True)
        sys.exit(130)

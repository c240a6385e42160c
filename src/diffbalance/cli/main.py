"""The `diffbalance` command: a thin Typer shell over the library.

Each subcommand lives in its own module under `diffbalance.cli` and registers itself on `cli.app.app`; it parses
options, writes its resolved config and calls one library function. A `DiffbalanceError` becomes one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from diffbalance.cli import fid, make_lt, rebalance, run, train_generator  # noqa: F401  (register the commands)
from diffbalance.cli.app import app
from diffbalance.errors import DiffbalanceError


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
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

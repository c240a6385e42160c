"""The Typer application every subcommand registers on (`cli.main` imports them and runs it)."""

from __future__ import annotations

import typer

from diffbalance.infra import distributed

app = typer.Typer(
    name="diffbalance",
    help="Rebalance imbalanced image datasets with diffusion models, and measure whether it helps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # plain help: Typer's Rich help reads every help text as Rich markup, emoji codes included, so the example
    # cifar10:train:linear=500 printed as "cifar10🚋linear=500" (and "[...]" in a text could vanish as a tag)
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """Rebalance imbalanced image datasets with diffusion models, and measure whether it helps."""


def say(text: str) -> None:
    """Print a command's result (stdout); under torchrun only rank 0 speaks for the job."""
    if distributed.current().is_main:
        typer.echo(text)

"""`diffbalance replicate RUN`: a finished run's verdicts re-tested on fresh draws of its data, recipes frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from diffbalance.cli.app import app, say


@app.command("replicate")
def replicate_command(
    run: Annotated[Path, typer.Argument(help="a finished `diffbalance run` folder (with a verdict)")],
    draws: Annotated[int, typer.Option(help="fresh imbalanced draws to re-test the verdicts on")] = 2,
    seed: Annotated[int, typer.Option(help="draw d takes imbalance seed SEED + d")] = 1,
    rotate: Annotated[bool, typer.Option(help="rotate the class order per draw (other classes rare)")] = True,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Freeze RUN's chosen recipes and re-run the verdict's two methods on DRAWS fresh draws (RUN/replication/
    draw<d>); write RUN/replication.json and RUN/replication.md: whether each verdict held."""
    from diffbalance.experiment.config import ReplicateConfig
    from diffbalance.experiment.runner import replicate
    from diffbalance.infra.atomic import write_text
    from diffbalance.infra import distributed
    from diffbalance.report.replication import replication_section

    cfg = ReplicateConfig.from_dict({"draws": draws, "seed": seed, "rotate": rotate}, path="replicate")
    body = replicate(run, cfg, progress=not quiet)
    text = "\n\n".join(replication_section(body)) + "\n"
    distributed.on_main(lambda: write_text(Path(run) / "replication.md", text))
    say(text.replace("**", ""))

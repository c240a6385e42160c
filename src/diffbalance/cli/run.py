"""`diffbalance run [CONFIG]`: methods × classifiers × seeds on one imbalanced set → results.json + report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from diffbalance.cli.app import app, say
from diffbalance.presets import PRESETS


@app.command("run")
def run(
    config: Annotated[Optional[str], typer.Argument(help=f"YAML config or preset name ({', '.join(PRESETS)}); default: demo")] = None,
    out: Annotated[Path, typer.Option(help="run folder (resumes what is already there)")] = Path("runs/demo"),
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N (overrides the config)")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="dataset folder (overrides data.root)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
    log_dir: Annotated[Optional[Path], typer.Option(help="write TensorBoard curves here (overrides log_dir:; needs "
                                                         "pip install 'diffbalance[tensorboard]')")] = None,
) -> None:
    """Run an experiment (or a study: one experiment per profile, in OUT/<profile>); with no CONFIG, the demo."""
    from diffbalance.experiment.config import load_experiments
    from diffbalance.experiment.runner import run_study
    from diffbalance.report.tables import metric_table
    from diffbalance.report.verdict import verdict_text

    experiments = []
    for name, cfg in load_experiments(config or "demo"):  # every experiment's config is checked when it is read
        if device is not None:
            cfg = cfg.replace(device=device)
        if data_root is not None:
            cfg = cfg.replace(data=cfg.data.replace(root=data_root))
        if log_dir is not None:
            cfg = cfg.replace(log_dir=str(log_dir))
        experiments.append((name, cfg))
    _say_expected_time([cfg for _, cfg in experiments])
    for (name, cfg), results in zip(experiments, run_study(experiments, out, progress=not quiet)):
        methods = cfg.row_names()
        say(f"\n{cfg.name}\nTest accuracy (%), mean ± std over seeds:\n")
        say(metric_table(results["runs"], methods, cfg.classifier_names(), "accuracy"))
        say("\nMacro-F1 (%):\n")
        say(metric_table(results["runs"], methods, cfg.classifier_names(), "macro_f1"))
        for verdict in (results.get("verdict") or {}).values():
            if verdict:
                say("\n" + verdict_text(verdict, results.get("ledger")).replace("**", ""))
        say(f"\nreport: {Path(out) / name / 'report.md' if name else Path(out) / 'report.md'}")
    if len(experiments) > 1:
        say(f"\nstudy summary: {Path(out) / 'summary.md'}")


def _say_expected_time(configs: list) -> None:
    """On a CPU run of a config that states its measured wall time, the time to expect here (a ~1 s probe)."""
    from diffbalance.infra import distributed
    from diffbalance.infra.device import resolve_device
    from diffbalance.experiment.speed import classifier_img_s, expected_time_line

    timed = [c.expected_time for c in configs if c.expected_time is not None]
    if not timed or distributed.launched() or any(resolve_device(c.device).type != "cpu" for c in configs):
        return  # measured alone on one CPU process: it says nothing about a GPU or a torchrun job
    say(expected_time_line(timed, classifier_img_s()))


@app.command("presets")
def presets(name: Annotated[Optional[str], typer.Argument(help="preset to print")] = None) -> None:
    """List the shipped presets, or print one (a starting point for your own config)."""
    from diffbalance.experiment.config import preset_text

    if name is None:
        say("\n".join(PRESETS))
    else:
        say(preset_text(name))

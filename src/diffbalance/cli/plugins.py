"""`diffbalance plugins`: every name a config or an option can take — datasets, rebalancers, classifiers (timm's
and torchvision's ImageNet models included), FID features, samplers — with its one-line help, read from the
registries; `--timm PATTERN` lists the timm models a classifier name can be."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from diffbalance.cli.app import app, say


@app.command("plugins")
def plugins(
    timm: Annotated[Optional[str], typer.Option(
        "--timm", help="also list the timm models matching this pattern, e.g. 'convnext*' ('*': all); each goes "
                       "into classifiers: as timm/<name>")] = None,
    pretrained: Annotated[bool, typer.Option(
        "--pretrained", help="with --timm: only the models timm has pretrained weights for")] = False,
) -> None:
    """Every registered plug-in by kind, with its one-line help."""
    from diffbalance.classify.models import CLASSIFIERS
    from diffbalance.data.registry import SOURCES
    from diffbalance.evaluate.fid.extractors import EXTRACTORS
    from diffbalance.generate.schedulers import SAMPLERS
    from diffbalance.rebalance.base import REBALANCERS

    where = {SOURCES: "datasets (data.name, NAME:SPLIT specs)", REBALANCERS: "rebalancers (methods[].rebalancer, "
             "--method)", CLASSIFIERS: "classifiers (classifiers:, train.model)", EXTRACTORS: "FID features "
             "(fid.features, --features)", SAMPLERS: "samplers (a method's sampler / scheduler)"}
    for registry, heading in where.items():
        say(f"{heading}:")
        for entry in registry.entries():
            say(f"  {entry.name}: {entry.help}")
        if registry.hint:
            say(f"  {registry.hint}")
    if timm is not None:
        import timm as timm_lib

        names = timm_lib.list_models(timm, pretrained=pretrained)
        say(f"timm models matching {timm!r}{' with pretrained weights' if pretrained else ''} ({len(names)}): "
            + (", ".join(f"timm/{n}" for n in names) or "none"))

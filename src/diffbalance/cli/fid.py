"""`diffbalance fid A B`: FID between two image sets, with how it was measured.

A and B are image folders (one subfolder per class), fill folders of a run (with fill.json), RUN_DIR@METHOD, or
registered data sources as NAME:SPLIT, such as `cifar10:train` or `fashion-mnist:test` (see
`diffbalance.experiment.image_sets`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from diffbalance.infra import distributed
from diffbalance.infra.atomic import check_writable, write_json
from diffbalance.cli.app import app, say
from diffbalance.data.image_folder import ON_CORRUPT
from diffbalance.data.sources import available_sources
from diffbalance.evaluate.fid.features import DEFAULT_BATCH, INCEPTION_CPU_BATCH
from diffbalance.evaluate.fid.protocol import describe_extractors
from diffbalance.infra.errors import DiffbalanceError

SHOWN = ("n_a", "n_b", "features", "resize", "weights_sha256", "feature_dtype", "device", "seconds")


@app.command("fid")
def fid_command(
    a: str = typer.Argument(..., help=f"image folder, fill folder, RUN_DIR@METHOD, or NAME:SPLIT with NAME one of "
                                      f"{', '.join(available_sources())} (e.g. cifar10:train)"),
    b: str = typer.Argument(..., help="image folder, fill folder, RUN_DIR@METHOD, or NAME:SPLIT"),
    weights: Path = typer.Option(None, "--weights", "--fid-weights", help="Inception weights (TorchScript or .pth)"),
    features: str = typer.Option("inception", help=f"{describe_extractors()} (those built from a "
                                                   "classifier need --domain-classifier)"),
    domain_classifier: Path = typer.Option(
        None, help="domain features: a saved classifier folder, e.g. RUN/reference-classifier"),
    resize: str = typer.Option("bilinear-torch", help="bilinear-torch (pytorch-fid) | bilinear-tf1x (torch-fidelity)"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    batch_size: Optional[int] = typer.Option(  # None: the library's auto batch (FidConfig.batch_size)
        None, help=f"images per forward pass (default: auto, {INCEPTION_CPU_BATCH} for Inception on the CPU, "
        f"else {DEFAULT_BATCH}; features do not depend on it)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write $DIFFBALANCE_CACHE"),
    on_corrupt: str = typer.Option(
        "error", "--on-corrupt", help=f"{' | '.join(ON_CORRUPT)}: what an unreadable image in a folder does; error "
        "by default, as FID over silently dropped images would mislead (skip names them on stderr and counts them)"),
    json_out: Path = typer.Option(None, "--json", help="also write the result here (JSON)"),
    image_column: Optional[str] = typer.Option(
        None, help="hf: specs: the Image column (default: the dataset's one Image feature)"),
    label_column: Optional[str] = typer.Option(
        None, help="hf: specs: the label column (default: its one ClassLabel feature, or a column named label)"),
) -> None:
    """FID (the paper's equation 11) between two image sets; prints it with sample counts, resize, weights checksum."""
    from diffbalance.evaluate.fid import FidConfig
    from diffbalance.experiment.image_sets import compare_image_sets

    if json_out is not None:
        check_json_path(json_out)  # before minutes of feature extraction, not after
    cfg = FidConfig.from_dict({"features": features, "weights_path": str(weights) if weights else None,
                               "resize": resize, "batch_size": batch_size, "cache": not no_cache})
    columns = {k: v for k, v in (("image_column", image_column), ("label_column", label_column)) if v}
    result = compare_image_sets(a, b, cfg, device, domain_classifier, on_corrupt=on_corrupt, columns=columns)
    label = result["score"] if result["score"] != "FID" else f"FID ({features} features)"  # domain-FID says so
    say(f"{label}: {result['fid']:.4f}")
    for key in SHOWN:
        say(f"  {key}: {result[key]}")
    if result["skipped_a"] or result["skipped_b"]:  # the score is over fewer images than the folders hold
        say(f"  skipped unreadable: a {result['skipped_a']}, b {result['skipped_b']}")
    if json_out:
        distributed.on_main(lambda: write_json(json_out, result))
        say(f"  written: {json_out}")


def check_json_path(path: Path) -> None:
    """A one-line error now if the result could not be written to `path` later (a folder there, or below a file)."""
    if path.is_dir():
        raise DiffbalanceError(f"--json {path} is a folder", "give a file path such as fid.json")
    try:
        check_writable(path.parent)
    except DiffbalanceError as err:
        raise DiffbalanceError(f"--json {path} cannot be written: {err.problem}", "choose another path") from None

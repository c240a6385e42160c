"""An adapter folder on disk, and putting it into a loaded pipeline.

    adapt_config.json                  model, AdaptConfig, classes, counts, data checksum (written first)
    checkpoint-<step>/                 resumable training state (diffbalance.infra.checkpoint), the newest kept
    pytorch_lora_weights.safetensors   lora: pipe.load_lora_weights(folder)
    tokens/<class>/learned_embeds.safetensors
                                       textual-inversion: pipe.load_textual_inversion(that file or its folder,
                                       token="<class>")
    adapter.json                       written last (its presence = finished): method, model, classes, each class's
                                       word in prompts, the files, the probe and training losses
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffbalance.infra.errors import DiffbalanceError

ADAPTER_FILE, CONFIG_FILE = "adapter.json", "adapt_config.json"
RERUN = "run `diffbalance adapt` into that folder (again, to finish it), or pass adapt: {...} to train one here"


def is_finished(folder: Path) -> bool:
    return (Path(folder) / ADAPTER_FILE).is_file()


def same_model(a: str, b: str) -> bool:
    """Whether two model strings name the same model: equal Hub ids, or the same local folder however written."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.is_dir() or pb.is_dir():
        return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()
    return a == b


def read_adapter(folder: str | Path, model: str | None = None) -> dict[str, Any]:
    """adapter.json of a finished adapter folder (checked against base `model` when given); one-line errors."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DiffbalanceError(f"no adapter folder at {folder}", RERUN)
    if not is_finished(folder):
        raise DiffbalanceError(f"{folder} is not a finished adapter (no {ADAPTER_FILE})", RERUN)
    try:
        info = json.loads((folder / ADAPTER_FILE).read_text())
        _ = info["method"], info["model"], list(info["class_names"]), dict(info["words"]), dict(info["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DiffbalanceError(f"adapter {folder} has a damaged {ADAPTER_FILE} ({type(err).__name__})",
                               "delete it and run `diffbalance adapt` again") from None
    if model is not None and not same_model(info["model"], model):
        raise DiffbalanceError(f"adapter {folder} was trained on {info['model']}, not on {model}",
                               f"use model: {info['model']} with it, or adapt {model} itself")
    return info


def check_classes(info: dict[str, Any], class_names: Sequence[str], folder: Path) -> None:
    """Every class of the dataset must have a word in the adapter (it may know more classes)."""
    missing = [str(c) for c in class_names if str(c) not in info["words"]]
    if missing:
        raise DiffbalanceError(
            f"adapter {folder} has no class {', '.join(map(repr, missing))} (it knows "
            f"{', '.join(info['class_names'])})", "adapt on this dataset, or rename its classes to the adapter's")


def apply_adapter(pipe, folder: Path, info: dict[str, Any]) -> None:
    """Load the adapter into `pipe` with diffusers' own loaders (LoRA layers, or the learned tokens)."""
    folder = Path(folder)
    try:
        if info["method"] == "lora":
            pipe.load_lora_weights(str(folder), weight_name=info["files"]["lora"])
        else:
            tokens = list(info["files"]["tokens"])
            pipe.load_textual_inversion([str(folder / info["files"]["tokens"][t]) for t in tokens], token=tokens)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise DiffbalanceError(f"cannot load adapter {folder} into {info['model']} "
                               f"({' '.join(str(err).split())[:160]})", "re-run `diffbalance adapt`") from None

"""Files of a trained classifier and of a resumable classifier run; safetensors for tensors, JSON for the rest.

    classifier/                  model.safetensors, classifier.json   (TrainedClassifier.save / load)
    <checkpoint_dir>/resume/     state.safetensors, state.json        (train_classifier's periodic checkpoint,
                                                                       written by diffbalance.infra.checkpoint)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffbalance.infra.checkpoint import read_folder, write_folder

MODEL_FILE, MODEL_META = "model.safetensors", "classifier.json"
RESUME_FOLDER = "resume"


def save_classifier(folder: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Weights to model.safetensors, everything needed to rebuild and feed the model to classifier.json."""
    write_folder(folder, MODEL_FILE, model.state_dict(), MODEL_META, meta)


def load_classifier_files(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return read_folder(folder, MODEL_FILE, MODEL_META, "classifier")

"""Over-generate and filter (DiffuLT's filtering, as a wrapper option of any generative method: `filter:` on a method).

For every class c that needs n_c images, the method makes K_c = ⌈factor · n_c⌉ candidates — candidate j is exactly the
image j the unfiltered method would make (seed derive_seed(fill_seed, c, j)) — and a *judge* scores each one:

    confidence   p_judge(c | x), the judge's softmax probability of the intended class
    distance     r(x) = d_k(x) / median_x'∈real_c d_k(x'): mean distance from x to its k nearest real images of class c
                 in the judge's (L2-normalised) feature space, relative to the same distance among the real images
                 of c themselves (leave-one-out), so r ≈ 1 means "as close to the real images as they are to each other"
    score        confidence | −distance | both = confidence · exp(1 − max(r, 1))  (off-manifold candidates discounted)

The n_c best-scoring candidates are kept (ties by candidate index) and renumbered 0…n_c−1 in candidate order.
The judge is a classifier trained on the *imbalanced real training set* only (no fills, no validation images): a user
has no balanced data. (The report's reference classifier, trained on balanced data, is never used for choices.)

Fill folder of a filtered method:
    candidates/        a normal fill of the K_c candidates (resumable like any fill)
    selection.jsonl    one line per candidate: class, index, confidence, distance ratio, score, kept
    fill.json, classes.json, manifest.jsonl, <class>/NNNNN.png, complete.json   the kept images (a normal fill folder)
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from sklearn.base import clone

from diffbalance.infra import distributed
from diffbalance.infra.atomic import write_json, write_text
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.train import TrainedClassifier, train_classifier
from diffbalance.infra.configs import Config
from diffbalance.data.image_folder import class_folders, write_class_listing, write_png
from diffbalance.data.imageset import ImageSet
from diffbalance.rebalance.base import Rebalancer
from diffbalance.rebalance.store import fill, fill_header, load_fill, read_manifest


@dataclass(frozen=True)
class FilterConfig(Config):
    factor: float = 2.0  # candidates made per kept image (≥ 1)
    score: Literal["confidence", "distance", "both"] = "both"  # what ranks the candidates (module docstring)
    neighbours: int = 5  # k of the k-NN distance to the real images of the intended class
    judge: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10))  # recipe of the judge classifier
    judge_seed: int = 0  # its training seed

    def validate(self) -> None:
        self.require(self.factor >= 1, "factor", "at least 1 (candidates per kept image)")
        self.require(self.neighbours >= 1, "neighbours", "at least 1")


def filtered_fill(reb: Rebalancer, cfg: FilterConfig, train: ImageSet, out_dir: Path, workdir: Path, judge_dir: Path,
                  device: torch.device, progress: bool = True) -> ImageSet:
    """The kept images of a filtered fill (resumable: a finished folder is read back, a partial one completed).
    `workdir` holds what the method trains (its generator), `judge_dir` the judges (shared by filtered methods)."""
    out_dir = Path(out_dir)
    plan = reb.plan(train)
    header = fill_header(reb, train, plan, filter=cfg.to_dict())
    images_to_add = header["images_to_add"]
    if (out_dir / "complete.json").is_file() and _same_header(out_dir, header):
        return load_fill(out_dir, train.class_names, images_to_add)
    counts = train.counts()
    wanted = {c: counts[c] + math.ceil(cfg.factor * n) for c, n in plan.items()}
    candidates_reb = clone(reb).set_params(sampling_strategy=wanted) if plan else reb
    candidates = fill(candidates_reb, train, out_dir / "candidates", workdir, progress)
    judge = train_judge(train, cfg, device, judge_dir, progress)
    scores = score_candidates(judge, train, candidates, cfg)
    kept = select(candidates.labels, scores["score"], images_to_add)
    distributed.on_main(lambda: _write_selected(out_dir, train, header, candidates, scores, kept))
    return load_fill(out_dir, train.class_names, images_to_add)


def train_judge(train: ImageSet, cfg: FilterConfig, device: torch.device, judge_dir: Path,
                progress: bool = True) -> TrainedClassifier:
    """The judge: `cfg.judge` trained on the real imbalanced images; checkpointed under `judge_dir`, so it is trained
    once per recipe and data (methods with the same filter share it)."""
    key = hashlib.sha256(json.dumps({"judge": cfg.judge.to_dict(), "seed": cfg.judge_seed,
                                     "counts": train.counts()}, sort_keys=True).encode()).hexdigest()[:12]
    return train_classifier(train, cfg.judge, device=device, seed=cfg.judge_seed,
                            checkpoint_dir=Path(judge_dir) / f"judge-{key}", progress=progress)


def score_candidates(judge: TrainedClassifier, real: ImageSet, candidates: ImageSet, cfg: FilterConfig) -> dict:
    """Per candidate: confidence p(c|x), distance ratio r(x) and the ranking score (module docstring)."""
    labels = candidates.labels
    probs = judge.logits(candidates.images).softmax(dim=1)  # (N, K)
    confidence = probs[torch.arange(len(labels)), labels]
    feats = F.normalize(judge.features(candidates.images), dim=1)  # (N, D)
    real_feats = F.normalize(judge.features(real.images), dim=1)
    ratio = torch.ones(len(labels))
    for c in labels.unique().tolist():
        ref = real_feats[real.labels == c]  # (M, D)
        k = min(cfg.neighbours, max(1, len(ref) - 1))
        scale = _knn_distance(ref, ref, k, leave_one_out=len(ref) > 1).median().clamp_min(1e-8)
        mine = labels == c
        ratio[mine] = _knn_distance(feats[mine], ref, k) / scale
    if cfg.score == "confidence":
        score = confidence
    elif cfg.score == "distance":
        score = -ratio
    else:
        score = confidence * torch.exp(1 - ratio.clamp_min(1))
    return {"confidence": confidence, "distance_ratio": ratio, "score": score,
            "in_class": probs.argmax(dim=1) == labels}


def _knn_distance(x: torch.Tensor, ref: torch.Tensor, k: int, leave_one_out: bool = False) -> torch.Tensor:
    """Mean Euclidean distance from each row of x to its k nearest rows of ref (x ⊂ ref when leave_one_out)."""
    d = torch.cdist(x, ref)  # (N, M)
    if leave_one_out:
        d = d + torch.eye(len(x), len(ref)) * 1e9  # a point is not its own neighbour
    return d.topk(min(k, d.shape[1]), dim=1, largest=False).values.mean(dim=1)


def select(labels: torch.Tensor, score: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """Bool mask (N,): per class c the keep[c] best scores (ties: lower candidate index first)."""
    kept = torch.zeros(len(labels), dtype=torch.bool)
    for c, n in enumerate(keep):
        idx = torch.nonzero(labels == c).flatten()  # candidate order
        order = sorted(range(len(idx)), key=lambda j: (-float(score[idx[j]]), j))
        kept[idx[order[:n]]] = True
    return kept


def _write_selected(out_dir: Path, train: ImageSet, header: dict, candidates: ImageSet, scores: dict,
                    kept: torch.Tensor) -> None:
    """selection.jsonl for every candidate, then the kept images as a normal fill folder (complete.json last)."""
    records = read_manifest(out_dir / "candidates")
    by_key = {(r["class_index"], r["index"]): r for r in records}
    keys = [(c, i) for c, n in enumerate(candidates.counts()) for i in range(n)]  # load_fill's order
    lines, manifest, folders = [], [], class_folders(train.class_names)
    next_index = [0] * train.num_classes
    for row, (c, j) in enumerate(keys):
        s = {name: round(float(scores[name][row]), 6) for name in ("confidence", "distance_ratio", "score")}
        lines.append(json.dumps({"class_index": c, "candidate_index": j, **s,
                                 "in_class": bool(scores["in_class"][row]), "kept": bool(kept[row])}))
        if kept[row]:
            i = next_index[c]
            next_index[c] += 1
            record = {**by_key[(c, j)], "index": i, "candidate_index": j, **s,
                      "file": f"{folders[c]}/{i:05d}.png"}
            write_png(candidates.images[row], out_dir / record["file"])
            manifest.append(json.dumps(record))
    write_text(out_dir / "selection.jsonl", "\n".join(lines) + "\n")
    write_json(out_dir / "fill.json", header)
    write_class_listing(out_dir, train.class_names, folders)
    write_text(out_dir / "manifest.jsonl", "\n".join(manifest) + ("\n" if manifest else ""))
    write_json(out_dir / "complete.json", {"present_per_class": next_index})


def _same_header(out_dir: Path, header: dict) -> bool:
    try:
        return json.loads((out_dir / "fill.json").read_text()) == json.loads(json.dumps(header))
    except (OSError, ValueError):
        return False


def acceptance(out_dir: Path, class_names: list[str]) -> dict | None:
    """Per class: candidates, kept, share the judge put in the intended class (all candidates / kept), mean score of
    kept vs rejected — for the report. None for a folder without a selection."""
    path = Path(out_dir) / "selection.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    table = {}
    for c, name in enumerate(class_names):
        mine = [r for r in rows if r["class_index"] == c]
        if not mine:
            continue
        kept = [r for r in mine if r["kept"]]
        rejected = [r for r in mine if not r["kept"]]
        table[name] = {"candidates": len(mine), "kept": len(kept),
                       "in_class_all": sum(r["in_class"] for r in mine) / len(mine),
                       "in_class_kept": sum(r["in_class"] for r in kept) / max(1, len(kept)),
                       "score_kept": sum(r["score"] for r in kept) / max(1, len(kept)),
                       "score_rejected": sum(r["score"] for r in rejected) / max(1, len(rejected))}
    return table


def kept_and_rejected(out_dir: Path, class_names: tuple[str, ...]) -> tuple[ImageSet, ImageSet]:
    """The candidates of a filtered fill split into kept and rejected images (for the report's grids)."""
    candidates = load_fill(Path(out_dir) / "candidates", class_names)
    rows = [json.loads(line) for line in (Path(out_dir) / "selection.jsonl").read_text().splitlines() if line.strip()]
    kept = torch.tensor([r["kept"] for r in rows], dtype=torch.bool)
    return (candidates.subset(torch.nonzero(kept).flatten(), "kept candidates"),
            candidates.subset(torch.nonzero(~kept).flatten(), "rejected candidates"))

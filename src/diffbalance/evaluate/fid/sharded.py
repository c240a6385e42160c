"""Feature extraction split over the ranks of a torchrun job (diffbalance.infra.distributed).

Rank r of W embeds the contiguous block [r·N/W, (r+1)·N/W) of the images; the blocks are all-gathered (NCCL: as
CUDA tensors, gloo: as CPU tensors) and concatenated in rank order, which is the images' own order. Every rank
then holds all N feature rows, so statistics, FID, precision/recall and KID are those of one process (features
of an image do not depend on the batch it ran in, up to float rounding). Without a launcher it is one call.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from diffbalance.infra import distributed
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.evaluate.fid.features import FeatureExtractor


def rank_block(n: int, d: distributed.Dist) -> slice:
    """Rank d.rank's contiguous share of n items (sizes differ by at most one; blocks in rank order)."""
    return slice(d.rank * n // d.world_size, (d.rank + 1) * n // d.world_size)


def extract_features(images: torch.Tensor, extractor: FeatureExtractor) -> torch.Tensor:
    """uint8 images (N, C, H, W) → float32 features (N, D) on the CPU, in the images' order; under torchrun
    every rank must call it with the same images, and each embeds only its block (of a stored set: reads only its
    block, data.store)."""
    d = distributed.current()
    if not d.active:
        return extractor(images[:]).float()
    counts = distributed.gather(len(images))
    if len(set(counts)) != 1:  # the ranks disagree on what to embed: gathering would mix different sets
        raise DiffbalanceError(f"ranks asked to embed different image counts ({counts})",
                               "this is a bug in diffbalance: every rank must embed the same images")
    local = distributed.agree(lambda: extractor(images[rank_block(len(images), d)]).float())
    return all_gather_rows(local, d)


def _collective_device() -> torch.device:
    """Where the backend's tensors live: the rank's GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_rows(local: torch.Tensor, d: distributed.Dist) -> torch.Tensor:
    """Every rank's rows (n_r, D), concatenated in rank order, on every rank (CPU float32). Blocks are padded to
    the longest, as all_gather needs one shape; a rank with no rows (n < W) sends padding only."""
    shapes = distributed.gather(tuple(local.shape))
    dim = next((s[1] for s in shapes if len(s) == 2), 0)
    longest = max(s[0] for s in shapes)
    device = _collective_device()
    block = torch.zeros(longest, dim, dtype=torch.float32, device=device)  # (n_max, D)
    if len(local):
        block[: len(local)] = local.to(device, torch.float32)
    blocks = [torch.empty_like(block) for _ in range(d.world_size)]
    dist.all_gather(blocks, block)
    return torch.cat([b[: s[0]] for b, s in zip(blocks, shapes)]).cpu()  # (N, D)

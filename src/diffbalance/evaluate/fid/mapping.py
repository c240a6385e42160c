"""The FID TorchScript's weights under the names of pytorch-fid's / torch-fidelity's FID InceptionV3, so the same
network can be built from blocks that accept any input size (the TorchScript takes 299×299 only).

The TorchScript (../shared/data/fid-inception/PROVENANCE.md) folds each batch norm's scale into nothing (the TF graph
has none) and names convolutions by the TF graph; each of its 94 convolutions maps onto one BasicConv2d:
conv weight → conv.weight, beta → bn.bias, mean/var → bn.running_mean/var, bn.weight = 1 (BN eps is 1e-3 in both).
"""

from __future__ import annotations

from pathlib import Path

import torch

STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
        "conv_4": "Conv2d_4a_3x3"}
MIXED_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
           "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
           "tower_2.conv": "branch_pool"}
MIXED_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
           "tower.conv_2": "branch3x3dbl_3"}
MIXED_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
           "tower.conv_2": "branch7x7_3", "tower_2.conv": "branch_pool",
           **{f"tower_1.conv{s}": f"branch7x7dbl_{k + 1}" for k, s in enumerate(("", "_1", "_2", "_3", "_4"))}}
MIXED_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
           **{f"tower_1.conv{s}": f"branch7x7x3_{k + 1}" for k, s in enumerate(("", "_1", "_2", "_3"))}}
MIXED_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
           "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
           "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
           "tower_2_conv": "branch_pool"}
MIXED = {"mixed": ("Mixed_5b", MIXED_A), "mixed_1": ("Mixed_5c", MIXED_A), "mixed_2": ("Mixed_5d", MIXED_A),
         "mixed_3": ("Mixed_6a", MIXED_B), "mixed_8": ("Mixed_7a", MIXED_D), "mixed_9": ("Mixed_7b", MIXED_E),
         "mixed_10": ("Mixed_7c", MIXED_E), **{f"mixed_{k}": (f"Mixed_6{'bcde'[k - 4]}", MIXED_C) for k in range(4, 8)}}


def conv_names() -> list[tuple[str, str]]:
    """(TorchScript conv under net.layers, pytorch-fid BasicConv2d) for all 94 convolutions."""
    pairs = list(STEM.items())
    for mixed, (block, table) in MIXED.items():
        pairs += [(f"{mixed}.{ts}", f"{block}.{pt}") for ts, pt in table.items()]
    return pairs


def torchscript_state_dict(torchscript: str | Path) -> dict[str, torch.Tensor]:
    """The TorchScript's weights as a state dict of the pool3 network in pytorch-fid's layout (no fc)."""
    ts = torch.jit.load(str(torchscript), map_location="cpu").state_dict()
    out = {}
    for src, dst in conv_names():
        p = f"net.layers.{src}."
        out |= {f"{dst}.conv.weight": ts[p + "weight"], f"{dst}.bn.weight": torch.ones_like(ts[p + "beta"]),
                f"{dst}.bn.bias": ts[p + "beta"], f"{dst}.bn.running_mean": ts[p + "mean"],
                f"{dst}.bn.running_var": ts[p + "var"]}
    unmapped = set(ts) - {f"net.layers.{s}.{k}" for s, _ in conv_names() for k in ("weight", "beta", "mean", "var")}
    if unmapped:
        raise ValueError(f"{torchscript}: parameters the mapping does not know: {sorted(unmapped)[:4]}")
    return out

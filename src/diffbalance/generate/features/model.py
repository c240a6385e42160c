"""The ε-network of the feature diffusion model: a residual MLP on D-dimensional feature vectors (LDMLR, Han et al.,
"Latent-based Diffusion Model for Long-tailed Recognition", CVPR-W 2024, diffuses the penultimate features of the
classifier with a small MLP denoiser instead of a UNet).

    e = MLP(sinusoid(t)) + E[c]                         c ∈ {0..K−1}, or ∅ = K (the null class, Ho & Salimans 2022)
    h_0 = W_in x_t
    h_{k+1} = h_k + W2_k SiLU(W1_k SiLU(LN(h_k)) + U_k SiLU(e))     k = 0..depth−1
    ε_θ(x_t, t, c) = W_out SiLU(LN(h_depth))                        W_out starts at 0, so ε_θ ≡ 0 at init

sinusoid(t) is the Transformer's position encoding as DDPM embeds its timestep (Vaswani et al. 2017; Ho et al. 2020,
App. B): [cos(t·ω_i), sin(t·ω_i)], ω_i = 10000^(−i/(d/2)), i = 0..d/2−1.

The model works in standardised feature space, x_0 = (f − μ) / σ per dimension; μ and σ (of the real features)
are buffers of the module, so a checkpoint carries them and `to_features` maps a sample back: f = σ ⊙ x_0 + μ.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from diffbalance.infra.seeding import forked_rng

TIME_EMBED_DIM = 128  # width of the sinusoidal timestep embedding before its MLP
MIN_STD = 1e-6  # σ of a constant feature dimension (a dead ReLU channel) is raised to this: x_0 stays finite


def timestep_embedding(t: torch.Tensor, dim: int = TIME_EMBED_DIM) -> torch.Tensor:
    """(B,) timesteps → (B, dim) float32 [cos(t·ω_i), sin(t·ω_i)], ω_i = 10000^(−i/(dim/2)); dim even."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)  # (d/2,)
    angles = t.float()[:, None] * freqs[None, :]  # (B, d/2)
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResidualBlock(nn.Module):
    """h + W2 SiLU(W1 SiLU(LN(h)) + U SiLU(e)): one pre-norm MLP block, conditioned by adding the embedding."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.cond = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.fc1(F.silu(self.norm(h))) + self.cond(F.silu(emb))  # (B, H)
        return h + self.fc2(F.silu(z))


class FeatureEpsNet(nn.Module):
    """ε_θ(x_t, t, c) on standardised features (B, D); class `num_classes` is the null class ∅."""

    def __init__(self, feature_dim: int, num_classes: int, hidden: int, depth: int):
        super().__init__()
        self.num_classes = num_classes
        self.time_mlp = nn.Sequential(nn.Linear(TIME_EMBED_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.class_embedding = nn.Embedding(num_classes + 1, hidden)  # the last row is ∅
        self.input = nn.Linear(feature_dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.output = nn.Linear(hidden, feature_dim)
        nn.init.zeros_(self.output.weight)  # ε_θ ≡ 0 at init (ADM's zero-initialised output), a loss of 1 to start
        nn.init.zeros_(self.output.bias)
        self.register_buffer("feature_mean", torch.zeros(feature_dim))  # μ (D,) of the real features
        self.register_buffer("feature_std", torch.ones(feature_dim))  # σ (D,), at least MIN_STD

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        # x_t: (B, D); t: (B,) or a 0-dim timestep shared by the batch; class_labels: (B,) int64, ∅ = num_classes
        t = t.expand(len(x_t)) if t.ndim == 0 else t
        emb = self.time_mlp(timestep_embedding(t)) + self.class_embedding(class_labels)  # (B, H)
        h = self.input(x_t)  # (B, H)
        for block in self.blocks:
            h = block(h, emb)
        return self.output(F.silu(self.out_norm(h)))  # (B, D)

    @torch.no_grad()
    def fit_standardisation(self, features: torch.Tensor) -> None:
        """μ, σ per dimension of the real features (N, D) (σ: the population std, at least MIN_STD)."""
        mean = features.double().mean(dim=0)
        std = features.double().std(dim=0, correction=0).clamp_min(MIN_STD)
        self.feature_mean.copy_(mean.float())
        self.feature_std.copy_(std.float())

    def to_model_space(self, features: torch.Tensor) -> torch.Tensor:
        """x_0 = (f − μ) / σ, (N, D)."""
        return (features - self.feature_mean) / self.feature_std

    def to_features(self, x0: torch.Tensor) -> torch.Tensor:
        """f = σ ⊙ x_0 + μ, (N, D)."""
        return x0 * self.feature_std + self.feature_mean


def build_feature_model(feature_dim: int, num_classes: int, hidden: int, depth: int, seed: int) -> FeatureEpsNet:
    """A freshly initialised FeatureEpsNet on the CPU; nn.Linear draws from the global RNG, so it is forked and
    seeded with `seed` (the caller's RNG untouched)."""
    with forked_rng(seed):
        return FeatureEpsNet(feature_dim, num_classes, hidden, depth)

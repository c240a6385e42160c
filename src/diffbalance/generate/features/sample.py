"""Sample synthetic features from the trained feature model (LDMLR, Han et al., "Latent-based Diffusion Model for
Long-tailed Recognition", CVPR-W 2024), with classifier-free guidance (paper eq. 8, generate.guidance.guide):

    ε̃(x_t, c) = (1 + w)·ε_θ(x_t, c) − w·ε_θ(x_t, ∅)

inside the project's pure sampler loop (generate.cfg.sampling.sample) over a fresh diffusers scheduler from
generate.schedulers.make_scheduler: ddim (η = 0, trailing timesteps), dpmpp (DPM-Solver++(2M)) or ddpm (ancestral,
all T steps). No clipping or thresholding of x̂_0: standardised features are not bounded like pixels. The sample
x_0 is mapped back to feature space, f = σ ⊙ x_0 + μ.

Feature k's initial noise (and, for ddpm, every per-step draw) comes from its own torch.Generator seeded with
seeds[k], on the model's device: feature k does not depend on the batch it is sampled in (up to the float round-off
of batched matrix products) nor on the features before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from diffbalance.generate.cfg.sampling import STOCHASTIC, image_generators, initial_latents, sample, sampling_steps
from diffbalance.generate.features.config import FeatureFillConfig
from diffbalance.generate.features.model import FeatureEpsNet
from diffbalance.generate.guidance import guide
from diffbalance.generate.schedulers import make_scheduler

SAMPLE_BATCH = 1024  # features per sampling batch (the output does not depend on it)
SCHEDULER_OPTIONS = {  # no clip_sample / thresholding: x̂_0 of standardised features is not in [−1, 1]
    "ddpm": {"clip_sample": False},
    "ddim": {"clip_sample": False, "timestep_spacing": "trailing"},
    "dpmpp": {"solver_order": 2},
}
STEP_OPTIONS = {"ddim": {"eta": 0.0}}


@dataclass(frozen=True, eq=False)
class GuidedFeatureEpsilon:
    """Callable ε̃(x_t, t, class_labels) → (B, D); both halves of eq. 8 in one forward of 2B rows, w = 0 skips ∅."""

    model: FeatureEpsNet  # eval mode
    guidance_w: float  # Ho & Salimans' w (eq. 8), ≥ 0; the rebalancers' guidance_w, its convention resolved

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        # x_t: (B, D); t: a 0-dim timestep shared by the batch; class_labels: (B,) int64
        if self.guidance_w == 0:
            return self.model(x_t, t, class_labels)
        null = torch.full_like(class_labels, self.model.null_class)
        eps = self.model(torch.cat([x_t, x_t]), t, torch.cat([class_labels, null]))  # (2B, D)
        eps_cond, eps_uncond = eps.chunk(2)
        return guide(eps_cond, eps_uncond, self.guidance_w)


@torch.no_grad()
def sample_features(
    model: FeatureEpsNet,
    class_labels: Sequence[int],
    seeds: Sequence[int],
    config: FeatureFillConfig,
    batch_size: int = SAMPLE_BATCH,
) -> torch.Tensor:
    """(M, D) float32 features on the model's device, feature k of class class_labels[k] from seeds[k] alone."""
    if len(class_labels) != len(seeds):
        raise ValueError(f"{len(class_labels)} labels for {len(seeds)} seeds")
    device = model.feature_mean.device
    feature_dim = model.feature_mean.shape[0]
    model.eval()
    eps = GuidedFeatureEpsilon(model, float(config.guidance_w))
    steps = sampling_steps(config.sampler, config.num_inference_steps, config.num_train_timesteps)
    out = [torch.zeros(0, feature_dim, device=device)]
    for start in range(0, len(seeds), batch_size):
        labels = torch.as_tensor(list(class_labels[start : start + batch_size]), dtype=torch.long).to(device)
        gens = image_generators(seeds[start : start + batch_size], device)
        scheduler = make_scheduler(config.sampler, config.noise_schedule(), **SCHEDULER_OPTIONS[config.sampler])
        scheduler.set_timesteps(steps)  # a fresh scheduler per batch (DPM-Solver keeps past outputs), on the CPU
        latents = initial_latents(gens, (feature_dim,))  # (B, D) x_T ~ N(0, I)
        x0 = sample(eps, latents, labels, scheduler, gens if config.sampler in STOCHASTIC else None,
                    **STEP_OPTIONS.get(config.sampler, {}))
        out.append(model.to_features(x0))
    return torch.cat(out)

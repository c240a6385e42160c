"""One scheduler factory for every diffusion rebalancer: a sampler name + a base config → a fresh diffusers scheduler.

    ddpm       DDPMScheduler, ancestral (Ho et al. 2020, Alg. 2)
    ddim       DDIMScheduler (Song et al. 2021)
    dpmpp      DPMSolverMultistepScheduler, DPM-Solver++(2M), an ODE solver (Lu et al. 2022)
    dpmpp-sde  the same scheduler's SDE-DPM-Solver++(2M): stochastic, like DDPM
    euler_a    EulerAncestralDiscreteScheduler
    default    the base config's own scheduler class (a pretrained model's saved scheduler)

The base config says which forward process (β schedule, T, prediction type) the model was trained with: the
`cfg` rebalancer passes only those keys of its training scheduler, `ldm` its model's whole saved scheduler config
(so SD's timestep spacing and offsets carry over). Sampler options the caller wants on top go in `options`.
A scheduler keeps state while sampling (DPM-Solver's past outputs): build a new one for every batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

SchedulerName = Literal["ddpm", "ddim", "dpmpp", "dpmpp-sde", "euler_a", "default"]

# name → (diffusers class, options that make it that sampler)
KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmpp": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmpp-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
}
# the keys that define the forward process q(x_t | x_0); everything else in a saved config is a sampler option
FORWARD_PROCESS_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type")


def forward_process(config: Mapping[str, Any]) -> dict[str, Any]:
    """Only the forward-process keys of a scheduler config (DDPM's timestep_spacing etc. must not leak into others)."""
    return {k: config[k] for k in FORWARD_PROCESS_KEYS if k in config}


def make_scheduler(name: SchedulerName, base_config: Mapping[str, Any], **options: Any):
    """A new scheduler of kind `name` from `base_config` with `options` on top."""
    import diffusers

    if name == "default":
        if "_class_name" not in base_config:
            raise ValueError("scheduler 'default' needs a saved scheduler config (one with _class_name)")
        cls_name, fixed = base_config["_class_name"], {}
    elif name in KINDS:
        cls_name, fixed = KINDS[name]
    else:
        raise ValueError(f"unknown scheduler {name!r}; use one of {', '.join([*KINDS, 'default'])}")
    return getattr(diffusers, cls_name).from_config({**dict(base_config), **fixed, **options})

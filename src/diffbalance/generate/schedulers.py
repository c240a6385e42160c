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

Dynamic thresholding (Saharia et al. 2022, Imagen; diffusers' `thresholding`) clips x̂_0 to ±s with
s = clamp(quantile(|x̂_0|, ratio), 1, sample_max_value) per image: at sample_max_value = 1, s ≡ 1 and it is the
plain clamp(−1, 1) of `clip_sample`. The schedulers made here do exactly that clamp then, not a per-step quantile
(a sort of every image at every step); the numbers are the same.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from diffbalance.infra.registry import Registry

if TYPE_CHECKING:
    import torch

# sampler name → (diffusers class, the options that make it that sampler), with the models that offer it: `cfg`
# (generate.cfg), `features` (generate.features) and `ldm` (generate.text2image). The one list of sampler names.
SAMPLERS: Registry[tuple[str | None, dict[str, Any]]] = Registry("sampler")
for _name, _cls, _options, _models, _help in (
    ("ddpm", "DDPMScheduler", {}, ("cfg", "features"), "ancestral DDPM over all T steps (Ho et al. 2020, Alg. 2)"),
    ("ddim", "DDIMScheduler", {}, ("cfg", "features", "ldm"), "DDIM (Song et al. 2021)"),
    ("dpmpp", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, ("cfg", "features", "ldm"),
     "DPM-Solver++(2M), an ODE solver (Lu et al. 2022)"),
    ("dpmpp-sde", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, ("cfg",),
     "SDE-DPM-Solver++(2M): stochastic, like DDPM"),
    ("euler_a", "EulerAncestralDiscreteScheduler", {}, ("ldm",), "Euler ancestral"),
    ("default", None, {}, ("ldm",), "the scheduler saved with a pretrained model"),
):
    SAMPLERS.add(_name, (_cls, _options), help=_help, models=_models)


def sampler_names(model: str | None = None) -> tuple[str, ...]:
    """The samplers `model` ("cfg", "features", "ldm") offers, or all; for the configs' Literal choices."""
    return tuple(e.name for e in SAMPLERS.entries() if model is None or model in e["models"])


SchedulerName = Literal[sampler_names()]  # type: ignore[valid-type]
BetaSchedule = Literal["linear", "squaredcos_cap_v2"]  # diffusers' β schedules the generators here train with

# the keys that define the forward process q(x_t | x_0); everything else in a saved config is a sampler option
FORWARD_PROCESS_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type")


def forward_process(config: Mapping[str, Any]) -> dict[str, Any]:
    """Only the forward-process keys of a scheduler config (DDPM's timestep_spacing etc. must not leak into others)."""
    return {k: config[k] for k in FORWARD_PROCESS_KEYS if k in config}


def make_scheduler(name: SchedulerName, base_config: Mapping[str, Any], **options: Any):
    """A new scheduler of kind `name` from `base_config` with `options` on top."""
    import diffusers

    cls_name, fixed = SAMPLERS.get(name)  # an unknown name: a one-line error listing the samplers
    if cls_name is None:  # "default"
        if "_class_name" not in base_config:
            raise ValueError("scheduler 'default' needs a saved scheduler config (one with _class_name)")
        cls_name = base_config["_class_name"]
    config = {**dict(base_config), **fixed, **options}
    cls = getattr(diffusers, cls_name)
    if config.get("thresholding") and float(config.get("sample_max_value", 1.0)) == 1.0:
        cls = _clamped(cls)
    return cls.from_config(config)


def _clamp_unit(self, sample: torch.Tensor) -> torch.Tensor:
    """Dynamic thresholding at sample_max_value = 1: s = clamp(quantile, 1, 1) = 1, so clamp(x̂_0, −1, 1) / 1."""
    return sample.clamp(-1, 1)


@functools.cache
def _clamped(cls: type) -> type:
    """`cls` (same name, same config) whose thresholding at sample_max_value = 1 is the clamp it amounts to."""
    return type(cls.__name__, (cls,), {"_threshold_sample": _clamp_unit, "__module__": __name__,
                                       "__doc__": f"{cls.__name__} with thresholding at ±1 as a clamp."})

"""diffbalance: rebalance imbalanced image datasets with diffusion models, and prove whether it helps.

Library API, stage by stage (the CLI is a thin shell over these):

    from diffbalance import DataConfig, load_train_test, ImbalanceConfig, apply_profile
    from diffbalance import CFGRebalancer, MixupFill, build_rebalancer, fill          # or any rebalancer class
    from diffbalance import TrainConfig, train_classifier, classification_metrics
    from diffbalance import load_config, run_experiment

Every function that takes a device accepts "auto", "cpu", "cuda", "cuda:1" or a torch.device.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "ImageSet": "diffbalance.data.imageset",
    "DataConfig": "diffbalance.data.sources",
    "load_train_test": "diffbalance.data.sources",
    "profile_counts": "diffbalance.imbalance.profiles",
    "make_imbalanced": "diffbalance.imbalance.subset",
    "ImbalanceConfig": "diffbalance.imbalance.subset",
    "apply_profile": "diffbalance.imbalance.subset",
    "generation_counts": "diffbalance.imbalance.targets",
    "Rebalancer": "diffbalance.rebalance.base",
    "NoRebalance": "diffbalance.rebalance.oversample",
    "RandomOversample": "diffbalance.rebalance.oversample",
    "MixupFill": "diffbalance.rebalance.mixing",
    "CutMixFill": "diffbalance.rebalance.mixing",
    "CFGRebalancer": "diffbalance.generate.cfg.rebalancer",
    "TextToImageRebalancer": "diffbalance.generate.text2image.rebalancer",
    "ImageToImageRebalancer": "diffbalance.generate.text2image.rebalancer",
    "build_rebalancer": "diffbalance.rebalance.registry",
    "available_rebalancers": "diffbalance.rebalance.registry",
    "fill": "diffbalance.rebalance.store",
    "load_fill": "diffbalance.rebalance.store",
    "TrainConfig": "diffbalance.classify.config",
    "train_classifier": "diffbalance.classify.train",
    "RebalancedDataset": "diffbalance.classify.datasets",
    "class_balanced_sampler": "diffbalance.classify.datasets",
    "classification_metrics": "diffbalance.evaluate.metrics",
    "ExperimentConfig": "diffbalance.experiment.config",
    "load_config": "diffbalance.experiment.config",
    "run_experiment": "diffbalance.experiment.runner",
    "DiffbalanceError": "diffbalance.infra.errors",
    "resolve_device": "diffbalance.infra.device",
}


def __getattr__(name):  # lazy, so `import diffbalance` stays fast and does not import diffusers
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'diffbalance' has no attribute {name!r}")


__all__ = list(_EXPORTS)

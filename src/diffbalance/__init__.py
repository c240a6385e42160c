"""diffbalance: rebalance imbalanced image datasets with diffusion models, and prove whether it helps.

Library API, stage by stage (the CLI is a thin shell over these):

    from diffbalance import load_train_test, DataConfig, profile_counts, make_imbalanced, generation_counts
    from diffbalance import build_rebalancer, fill, train_classifier, TrainConfig, classification_metrics
    from diffbalance import load_config, run_experiment
"""

__version__ = "0.1.0"

_EXPORTS = {
    "ImageSet": "diffbalance.data.imageset",
    "DataConfig": "diffbalance.data.sources",
    "load_train_test": "diffbalance.data.sources",
    "profile_counts": "diffbalance.imbalance.profiles",
    "make_imbalanced": "diffbalance.imbalance.subset",
    "generation_counts": "diffbalance.imbalance.targets",
    "build_rebalancer": "diffbalance.rebalance.base",
    "available_rebalancers": "diffbalance.rebalance.base",
    "fill": "diffbalance.rebalance.store",
    "load_fill": "diffbalance.rebalance.store",
    "TrainConfig": "diffbalance.classify.config",
    "train_classifier": "diffbalance.classify.train",
    "classification_metrics": "diffbalance.evaluate.metrics",
    "ExperimentConfig": "diffbalance.experiment.config",
    "load_config": "diffbalance.experiment.config",
    "run_experiment": "diffbalance.experiment.runner",
    "DiffbalanceError": "diffbalance.errors",
}


def __getattr__(name):  # lazy, so `import diffbalance` stays fast and does not import diffusers
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'diffbalance' has no attribute {name!r}")


__all__ = list(_EXPORTS)

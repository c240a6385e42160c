"""Feature-space fills (LDMLR: Han et al., "Latent-based Diffusion Model for Long-tailed Recognition", CVPR-W 2024):
a small class-conditional diffusion model on a classifier's penultimate features, sampled with classifier-free
guidance to add features of the rare classes for the re-training of its linear head (classify.feature_fill).

    config.py   FeatureFillConfig (frozen; TrainConfig.feature_fill)
    model.py    FeatureEpsNet: a residual MLP ε-network, sinusoidal timestep + class embedding with a null class ∅
    train.py    train_feature_model(): DDPM's ε-loss with label dropout on standardised features, checkpointed
    sample.py   sample_features(): guided ε (generate.guidance) in the pure sampler loop (generate.cfg.sampling)

Nothing here imports diffusers at import time of config.py (classify.config reads it).
"""

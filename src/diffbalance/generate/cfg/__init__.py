"""Method 1 of the paper: a class-conditional DDPM trained on the imbalanced set, sampled with classifier-free
guidance (Ho & Salimans 2022). One folder, one file per stage:

    config.py    CFGTrainConfig (frozen; units in names)
    unet.py      diffusers UNet2DModel by named size (tiny / small / paper), null class = last embedding
    train.py     train_generator(): eq. 7 loss, label dropout, EMA, checkpoints, resume
    guidance.py  eq. 8, written once; one batched forward for the conditional and null halves
    sampling.py  sample(): ddpm / ddim / dpmpp with per-image seeds
    rebalancer.py  CFGRebalancer ("cfg"), the Rebalancer the experiment runner drives
"""

"""Method 1 of the paper: a class-conditional DDPM trained on the imbalanced set, sampled with classifier-free
guidance (Ho & Salimans 2022). One folder, one file per stage:

    config.py     CFGTrainConfig (frozen; units in names)
    unet.py       diffusers UNet2DModel by named size (tiny / small / paper), null class = last embedding
    loss.py       ddpm_loss(): eq. 7 with label dropout, a pure function
    train.py      train_generator(): the loop (EMA, checkpoints via diffbalance.infra.checkpoint, resume)
    generator.py  the generator as a diffusers pipeline folder (DDPMPipeline) + generator.json; load_generator()
    legacy.py     read-only support for folders of the older layout
    guidance.py   GuidedEpsilon: eq. 8 (generate.guidance.guide) with one batched forward for both halves
    sampling.py   sample(): the pure sampler loop; CFGSampler: scheduler, steps and w resolved once
    rebalancer.py CFGRebalancer ("cfg"), the Rebalancer the experiment runner drives
"""

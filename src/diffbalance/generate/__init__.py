"""The generative rebalancers' stages. Shared by all of them:

    base.py        GenerativeRebalancer: the base of cfg / ldm / ldm-img2img (synthetic share, guided checks)
    guidance.py    one guidance knob (w, in Ho's or Stable Diffusion's convention), paper eq. 8 written once
    schedulers.py  make_scheduler(): one factory for ddpm / ddim / dpmpp / dpmpp-sde / euler_a / default
    loading.py     load_pretrained(): safetensors only, no remote code, one-line errors when absent or offline

    cfg/           Method 1: class-conditional DDPM + classifier-free guidance, trained here
    text2image/    Method 2: a pretrained text-to-image latent diffusion model (Stable Diffusion)
"""

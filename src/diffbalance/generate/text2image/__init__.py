"""Method 2 (paper Section 3.2): a pretrained text-to-image latent diffusion model fills the minority classes.

`ldm` prompts the model with the class name (text → image); `ldm-img2img` starts from the class's own real
images (SDEdit / DA-Fusion style). Both downscale to the dataset's size. diffusers is imported lazily:
`diffbalance.generate.text2image.rebalancer` registers both rebalancers when first imported.
"""

from diffbalance.generate.text2image.postprocess import to_dataset_images, to_pipeline_images
from diffbalance.generate.text2image.prompts import class_prompt, clean_class_name

__all__ = ["class_prompt", "clean_class_name", "to_dataset_images", "to_pipeline_images"]

"""A tiny, randomly initialised Stable Diffusion pipeline saved as a real model folder, built offline.

Same layout as a Hugging Face SD checkpoint (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/, safetensors weights), so code under test loads it through the very `from_pretrained` path a
real model takes. Sizes follow diffusers' own fast tests: 8/16 channels, 16×16 latents → 32×32 images.

The CLIP tokenizer is real (CLIPTokenizer on vocab.json + merges.txt) with a truncated vocabulary built from
the BPE merges shipped inside `open_clip` (no download).

    from tiny_sd import save_tiny_sd
    folder = save_tiny_sd(tmp_path / "tiny-sd")
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import torch

NUM_MERGES = 500  # merges kept from CLIP's 48,894: enough that common words are whole tokens
IMAGE_SIZE = 32  # pixels; the pipeline's default output size (latent 16 × VAE factor 2)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tiny_clip_tokenizer(folder: Path, num_merges: int = NUM_MERGES) -> int:
    """Write vocab.json + merges.txt (+ tokenizer config) of a truncated CLIP BPE; returns the vocabulary size."""
    import open_clip

    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1 : 1 + num_merges]
    merges = [tuple(m.split()) for m in merges]
    # vocabulary in CLIP's order: bytes, bytes + "</w>", merged pairs, then the two special tokens
    vocab = list(_bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return len(vocab)


def _tiny_safety_checker():
    """A random StableDiffusionSafetyChecker + its CLIP image processor at 32×32 (what SD 1.5 ships, tiny)."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    tiny = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(
        text_config=dict(tiny, vocab_size=1000, bos_token_id=998, eos_token_id=999, pad_token_id=1),
        vision_config=dict(tiny, image_size=32, patch_size=8),
        projection_dim=16,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return StableDiffusionSafetyChecker(config), processor


def build_tiny_sd(tokenizer_dir: Path, seed: int = 0, safety_checker: bool = False):
    """A StableDiffusionPipeline with random tiny weights (CPU, fp32); optionally with a (random) safety checker."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer(
        str(tokenizer_dir / "vocab.json"),
        str(tokenizer_dir / "merges.txt"),
        model_max_length=77,
        pad_token="<|endoftext|>",
    )
    torch.manual_seed(seed)  # test fixture only: library code never seeds the global RNG
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        norm_num_groups=4,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=IMAGE_SIZE,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    checker, processor = _tiny_safety_checker() if safety_checker else (None, None)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=checker,
        feature_extractor=processor,
        requires_safety_checker=safety_checker,
    )


def save_tiny_sd(folder: Path, seed: int = 0, safety_checker: bool = False) -> Path:
    """Build the tiny pipeline and save it as a model folder with safetensors weights; returns the folder."""
    folder = Path(folder)
    if (folder / "model_index.json").exists():
        return folder
    tok_dir = folder.parent / f".{folder.name}-tokenizer-src"
    write_tiny_clip_tokenizer(tok_dir)
    build_tiny_sd(tok_dir, seed, safety_checker).save_pretrained(folder, safe_serialization=True)
    return folder


if __name__ == "__main__":  # python tests/tiny_sd.py OUT_DIR
    import sys

    print(save_tiny_sd(Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TMPDIR", "/tmp") + "/tiny-sd")))

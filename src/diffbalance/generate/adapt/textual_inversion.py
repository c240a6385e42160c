"""Textual inversion (Gal et al. 2023), one token per class as in DA-Fusion (Trabucco et al. 2024): each class gets
a new token "<name>" whose embedding v_k is the only thing trained; the text encoder, UNet and VAE stay frozen.

The new rows live in their own (K, D) tensor: `TokenEmbedding` answers ids below the base vocabulary from the
frozen table and the new ids from v, so the base rows cannot move (no masking of a 49,408-row gradient) and the
optimiser and checkpoints hold K×D numbers. v_k starts at the mean embedding of the class name's tokens.

Saved as diffusers' textual_inversion.py writes it, one concept per folder: tokens/<class>/learned_embeds.safetensors
holding {token: (1, D)}, which `pipe.load_textual_inversion(folder_or_file, token=token)` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffbalance.infra.atomic import atomic_path
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.text2image.prompts import clean_class_name

TOKENS_DIR, TI_FILE = "tokens", "learned_embeds.safetensors"  # TI_FILE: diffusers' default weight name


class TokenEmbedding(torch.nn.Module):
    """The text encoder's token table with K trainable rows appended: ids ≥ base size index `vectors`."""

    def __init__(self, base: torch.nn.Embedding, vectors: torch.Tensor):
        super().__init__()
        self.base, self.first_new = base, base.num_embeddings
        self.vectors = torch.nn.Parameter(vectors)  # (K, D)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_new = ids >= self.first_new  # (B, L)
        old = self.base(ids.clamp(max=self.first_new - 1))  # (B, L, D)
        new = self.vectors[(ids - self.first_new).clamp(min=0)]  # (B, L, D)
        return torch.where(is_new[..., None], new.to(old.dtype), old)


def add_tokens(pipe, tokens: Sequence[str], class_names: Sequence[str]) -> dict[str, torch.nn.Parameter]:
    """Add one token per class to the tokenizer and the trainable rows to the text encoder; returns them."""
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    base = encoder.get_input_embeddings()
    taken = [t for t in tokens if t in tokenizer.get_vocab()]
    if taken:
        raise DiffbalanceError(f"the tokenizer of this model already has token(s) {', '.join(taken)}",
                               "rename those classes (their token is <class name>)")
    if len(tokenizer) != base.num_embeddings:
        raise DiffbalanceError(f"the tokenizer has {len(tokenizer)} tokens but the text encoder {base.num_embeddings} "
                               "rows", "use a Stable Diffusion 1.x/2.x model as released")
    tokenizer.add_tokens(list(tokens))
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    assert ids == list(range(base.num_embeddings, base.num_embeddings + len(tokens))), ids
    with torch.no_grad():
        vectors = torch.stack([_name_embedding(tokenizer, base, c) for c in class_names]).float()  # (K, D)
    table = TokenEmbedding(base, vectors.to(base.weight.device))
    encoder.set_input_embeddings(table)
    return {"text_encoder.token_vectors": table.vectors}


def _name_embedding(tokenizer, base: torch.nn.Embedding, class_name: str) -> torch.Tensor:
    """Mean embedding of the class name's tokens, so the token starts where the name already points (D,); the
    mean of the whole table for a name without tokens."""
    ids = tokenizer(clean_class_name(class_name), add_special_tokens=False).input_ids
    rows = base.weight[torch.tensor(ids, dtype=torch.long, device=base.weight.device)] if ids else base.weight
    return rows.mean(0).cpu()


def save_tokens(folder: Path, tokens: Sequence[str], vectors: torch.Tensor, class_folders: Sequence[str]) -> Path:
    """Write TOKENS_DIR/<class>/TI_FILE, each {token: (1, D)} fp32, as one atomic folder; returns it."""
    final = Path(folder) / TOKENS_DIR
    with atomic_path(final) as tmp:
        for token, vector, name in zip(tokens, vectors.detach().float().cpu(), class_folders):
            (tmp / name).mkdir(parents=True)
            save_file({token: vector[None].clone()}, str(tmp / name / TI_FILE))
    return final

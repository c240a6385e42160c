"""A linear probe's features, computed once per input and kept: a frozen pretrained backbone (classify.backbones,
`finetune: linear-probe`) maps an input to the same features every time, so every seed, method and test evaluation of
a study after the first reads them from here instead of running the backbone again.

Keys are the backbone's identity (name, weights, input size, channels) and a BLAKE2b digest of the input's bytes as
the network sees them (normalised, after any flip): an image flipped or not is two entries, a different image or
backbone never matches. The store is in memory, least recently used first out beyond `MEMO_BYTES`. A feature is the
one computed the first time its input was seen, in whatever batch that was (batched convolutions can differ from one
another in the last bits); every later read is that tensor exactly.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import torch

MEMO_BYTES = 2 * 2**30  # 2 GiB of features: 260 k images of a 2048-d backbone


class FeatureMemo:
    def __init__(self, budget_bytes: int = MEMO_BYTES):
        self.budget_bytes = budget_bytes
        self._store: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def features(self, identity: str, x: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """compute(x) (N, ...) → (N, D), with the rows seen before read back and only the others computed (in one
        call); on x's device and in compute's dtype."""
        host = x.detach().contiguous().cpu()
        keys = [f"{identity}:{hashlib.blake2b(row.numpy().tobytes(), digest_size=16).hexdigest()}" for row in host]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}  # a copy in the same batch is computed once
        missing = sorted(i for k, i in first.items() if k not in self._store)  # kept in the batch's order
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh = {}
        if missing:
            with torch.no_grad():
                computed = compute(x[missing])
            for i, f in zip(missing, computed):
                fresh[keys[i]] = f.detach().cpu().clone()
        rows = [fresh[k] if k in fresh else self._store[k] for k in keys]
        for k in keys:
            if k in self._store:
                self._store.move_to_end(k)
        for k, f in fresh.items():
            self._store[k] = f
            self.bytes += f.numel() * f.element_size()
        while self.bytes > self.budget_bytes and self._store:
            _, old = self._store.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()
        return torch.stack(rows).to(x.device)

    def clear(self) -> None:
        self._store.clear()
        self.bytes = self.hits = self.misses = 0


MEMO = FeatureMemo()  # one per process: every linear probe of a run shares it

"""Names diffbalance used before, in one table: whatever was written with an old name (a config key, a command
option, a key of a saved fill.json or results.json) is still read, as today's name, with a one-line note.

Each place that reads old names says which of the table's it reads (`renamed(d, ("target",), path)`), so an old
name is never taken for today's where it was never used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from diffbalance.infra.configs import join
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.progress import note


@dataclass(frozen=True)
class Rename:
    new: str  # today's name
    convert: Callable[[Any], Any] | None = None  # the old value → today's (None: the same value)
    how: str = ""  # the conversion in words, for the note


def _scale_to_w(s: Any) -> float:
    """Stable Diffusion's s = 1 + w as the paper's w (s ≤ 1 is no guidance: w = 0)."""
    return max(0.0, float(s) - 1.0)


RENAMED: dict[str, Rename] = {  # old name → today's
    # experiment configs' key and `rebalance --target`, before 0.2 (imbalanced-learn's name since)
    "target": Rename("sampling_strategy"),
    # fill.json params of an ldm fill, format 1: diffusers' guidance_scale s = 1 + w
    "guidance_scale": Rename("guidance_w", _scale_to_w, "guidance_scale − 1, at least 0"),
    # results.json's dataset section, before the rename
    "fill_counts": Rename("images_to_add"),
}


def renamed(d: Mapping, old_names: Iterable[str], path: str = "", fix: str = "",
            spell: Callable[[str], str] | None = None) -> dict:
    """`d` with those of `old_names` (keys of RENAMED) it holds under today's names, values converted, each with a
    one-line note naming the key at `path` and `fix` (what to do about it); `spell` writes a name as the user knows
    it (an option: --name). An old and a new name together are an error, so neither value is dropped silently."""
    spell = spell or str
    out = dict(d)
    for old in old_names:
        if old not in out:
            continue
        rename = RENAMED[old]
        value = out.pop(old)
        where, new = join(path, spell(old)), spell(rename.new)
        if rename.new in out:
            raise DiffbalanceError(f"{where} and {join(path, new)} are both set", f"keep only {new}")
        how = f" = {rename.how}" if rename.how else ""
        note(f"{where} is now called {new} (read as {new}{how}" + (f"; {fix})" if fix else ")"))
        out[rename.new] = rename.convert(value) if rename.convert else value
    return out

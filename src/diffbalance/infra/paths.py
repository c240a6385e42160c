"""Where diffbalance keeps caches: one environment variable, one default."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DIFFBALANCE_CACHE"


def cache_dir(*parts: str) -> Path:
    """`$DIFFBALANCE_CACHE/<parts>`, default `~/.cache/diffbalance/<parts>` (decoded data sets, FID statistics)."""
    env = os.environ.get(CACHE_ENV)
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "diffbalance"
    return root.joinpath(*parts)

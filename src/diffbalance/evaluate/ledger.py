"""The test-set ledger: how many differing configs have been scored on each test set (by data hash).

Every config scored on a test set is another look at the same test images; a difference found after many looks is
weaker evidence than one found after a single look. The ledger is one JSON line per (test set, config) pair in
`$DIFFBALANCE_CACHE/ledger/test-sets.jsonl`, appended with a single `os.write` to a file opened O_APPEND (so
concurrent processes do not interleave lines) and O_NOFOLLOW (so a planted symbolic link is not written through).
It never stops a run: where the cache cannot be written the count read so far is returned and one note is printed.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
from pathlib import Path

import torch

from diffbalance.data.store import pixel_chunks
from diffbalance.infra.paths import cache_dir
from diffbalance.infra.progress import note


def ledger_path() -> Path:
    return cache_dir("ledger", "test-sets.jsonl")


def set_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """First 16 hex digits of sha256 over the shape, the uint8 pixel bytes and the labels (as int64)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"set_digest hashes uint8 pixels, got {images.dtype}")
    h = hashlib.sha256(f"shape={tuple(images.shape)};".encode())
    for rows in pixel_chunks(images):  # the same bytes in memory or on disk (data.store)
        h.update(rows)
    h.update(b";labels=")
    h.update(labels.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _read(path: Path) -> bytes:
    """The ledger's bytes; b"" when it is missing, unreadable or a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _configs(raw: bytes, test_digest: str) -> set[str]:
    """The distinct configs recorded for `test_digest`; lines that do not parse are skipped."""
    configs = set()
    for line in raw.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("test_set") == test_digest and isinstance(record.get("config"), str):
            configs.add(record["config"])
    return configs


@functools.lru_cache(maxsize=None)
def _note_unwritable(path: str, reason: str) -> None:
    note(f"the test-set ledger {path} cannot be written ({reason}); this run's scoring is not counted")


def scored_by(test_digest: str) -> int:
    """How many distinct configs the ledger has recorded for this test set."""
    return len(_configs(_read(ledger_path()), test_digest))


def record_scoring(test_digest: str, config_digest: str, what: str = "") -> int:
    """Record that `config_digest` was scored on `test_digest` (once per pair) and return how many distinct configs
    have been scored on that test set. Never raises on an unwritable cache: returns the count it could read."""
    path = ledger_path()
    raw = _read(path)
    configs = _configs(raw, test_digest)
    if config_digest in configs:
        return len(configs)
    record = {"test_set": test_digest, "config": config_digest, "what": what,
              "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    line = ("\n" if raw and not raw.endswith(b"\n") else "") + json.dumps(record) + "\n"  # after a torn last line
    data = line.encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as e:
        _note_unwritable(str(path), e.strerror or type(e).__name__)
        return len(configs)
    if written != len(data):
        _note_unwritable(str(path), f"short write, {written} of {len(data)} bytes")
        return len(configs)
    return len(configs) + 1

"""Sharded fills under gloo (2 CPU processes): the same bytes as one process, rank 0 alone writes the shared
files, and a fill cut short by a dead rank resumes at another world size with exactly the missing images."""

import os
from pathlib import Path

from dist_helpers import run_ranks
from diffbalance.infra.atomic import remove_stale_temps
from diffbalance.rebalance.store import fill, read_manifest
from test_rebalancers import make, tiny_set

ADD = [0, 5, 7]


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def fill_on_rank(rank: int, out: str, method: str, batch_size: int, die_after: int | None = None,
                 stored: str | None = None):
    import diffbalance.rebalance.store as store
    from diffbalance.data.store_build import open_store

    data = tiny_set() if stored is None else open_store(stored)  # in memory, or read by index from disk
    writes = []
    for name in ("write_json", "write_text", "write_class_listing"):  # who writes the shared files
        real = getattr(store, name)

        def spy(path, *args, _real=real, _name=name, **kw):
            writes.append(Path(path).name if _name != "write_class_listing" else "classes.json")
            return _real(path, *args, **kw)

        setattr(store, name, spy)
    reb = make(method, data, ADD, random_state=4, batch_size=batch_size)
    if die_after is not None and rank == 1:  # this rank dies like kill -9 after its first batches
        original, made = type(reb).generate, [0]

        def dying(self, c, seeds):
            made[0] += len(seeds)
            if made[0] > die_after:
                os._exit(9)
            return original(self, c, seeds)

        type(reb).generate = dying
    result = fill(reb, data, out, progress=False)
    return {"images": result.images.sum().item(), "writes": writes}


def test_two_ranks_fill_the_same_bytes_as_one(tmp_path, method="cutmix"):
    one = run_ranks(fill_on_rank, 1, str(tmp_path / "one"), method, 3)
    two = run_ranks(fill_on_rank, 2, str(tmp_path / "two"), method, 2)  # another batch size too
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "two")
    assert len(read_manifest(tmp_path / "two")) == sum(ADD)
    assert not list((tmp_path / "two").glob("manifest-rank*"))  # merged into manifest.jsonl
    assert one[0]["images"] == two[0]["images"] == two[1]["images"]  # every rank returns the whole fill
    assert two[1]["writes"] == []  # rank 0 alone writes fill.json, classes.json, manifest.jsonl, complete.json
    assert set(two[0]["writes"]) == {"fill.json", "classes.json", "manifest.jsonl", "complete.json"}


def test_a_rank_dying_mid_fill_then_resume_at_world_size_one(tmp_path):
    whole = run_ranks(fill_on_rank, 1, str(tmp_path / "whole"), "mixup", 2)
    assert not isinstance(whole[0], tuple)
    cut = run_ranks(fill_on_rank, 2, str(tmp_path / "cut"), "mixup", 1, 2)
    assert cut[1][0] == "died"  # rank 1 vanished; rank 0 did not hang
    assert cut[0][0] in ("raised", "died")
    before = read_manifest(tmp_path / "cut")
    assert 0 < len(before) < sum(ADD)
    remove_stale_temps(tmp_path / "cut")  # what the commands do under the folder's lock before resuming: a PNG
    # half-written by the dead rank's writer thread is left as a temporary name
    run_ranks(fill_on_rank, 1, str(tmp_path / "cut"), "mixup", 4)
    after = read_manifest(tmp_path / "cut")
    keys = [(r["class_index"], r["index"]) for r in after]
    assert len(keys) == len(set(keys)) == sum(ADD)  # none lost, none twice
    assert folder_bytes(tmp_path / "cut") == folder_bytes(tmp_path / "whole")


def test_two_ranks_fill_from_an_on_disk_store_the_same_bytes_as_one_in_memory(tmp_path):
    """The source images read by index from an image store (data.store), each rank reading the images its share of
    the fill copies and mixes: the same folder as one process on the in-memory set."""
    from diffbalance.data.store_build import write_store

    write_store(tmp_path / "store", tiny_set())
    one = run_ranks(fill_on_rank, 1, str(tmp_path / "one"), "cutmix", 3)
    two = run_ranks(fill_on_rank, 2, str(tmp_path / "two"), "cutmix", 2, None, str(tmp_path / "store"))
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "two")
    assert one[0]["images"] == two[0]["images"] == two[1]["images"]

"""What every stage shares, one mechanism each (no stage logic here; nothing here imports a stage):

    configs.py      typed, frozen config sections (`Config`): annotations are the schema, one-line errors
    errors.py       `DiffbalanceError`: the one-line "problem — fix" error of every bad input
    device.py       `entry_device` at every entry: "auto" | "cpu" | "cuda" | "cuda:N" | torch.device → torch.device
    distributed.py  torchrun / accelerate: joining the process group, rank-0 writes, one error for all ranks
    seeding.py      explicit seeds only: per-image seeds, generators, a forked global RNG
    atomic.py       temporary name then rename; the output folder's lock; a full disk as one line
    checkpoint.py   training state as safetensors + JSON, never a pickle
    paths.py        the cache folder
    progress.py     progress bars and the console (rank 0 speaks)
    readout.py      non-blocking scalar read-back for progress bars
    resources.py    memory checks before a job starts
    threads.py      CPU threads when other processes keep cores busy
"""

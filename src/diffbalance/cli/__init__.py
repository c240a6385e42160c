"""The `diffbalance` command (cli.main). Importing it first asks OpenMP to sleep rather than spin while idle, before
torch is loaded (diffbalance.threads)."""

from diffbalance.threads import passive_waiting

passive_waiting()

"""The `diffbalance` command (cli.main). Importing it first asks OpenMP to sleep rather than spin while idle, before
torch is loaded (diffbalance.infra.threads)."""

from diffbalance.infra.threads import passive_waiting

passive_waiting()

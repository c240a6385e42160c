"""The `diffbalance` command: a thin Typer shell over the library, with one error path.

Each subcommand lives in its own module under `diffbalance.cli` and registers itself on `cli.app.app`; it parses
options, writes its resolved config and calls one library function. Whatever goes wrong ends in ONE line on stderr:
    error: <problem> — fix: <fix>                      exit 2: bad input, usage errors included
    error: internal error (<type>: <text>) — fix: …    exit 1: a bug; the traceback goes to a log file
`--debug` (anywhere on the command line) prints the traceback instead and shows library warnings.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import sys
import traceback
import time
import warnings
from pathlib import Path

import torch.distributed
import typer

from diffbalance.infra import distributed

from diffbalance.cli import (adapt, fid, make_lt, plugins, rebalance, replicate, run,  # noqa: F401  (register the
                             train_generator)  # commands)
from diffbalance.cli.app import app
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.paths import cache_dir
from diffbalance.infra.threads import configure_threads

DEBUG_FLAG = "--debug"
INTERRUPTED = 130  # the shell's exit status for Ctrl-C
QUIET_RANK_WAIT_S = 2.0  # a rank that leaves the line to rank 0 waits this long before it exits
try:  # Typer ≥ 0.20 carries its own copy of click; older ones use click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors


_FAILING = False


def fail(message: str, code: int = 2, quiet: bool = False, wait: bool = True) -> None:
    """The one line (unless `quiet`: rank 0 says it for the job; a quiet rank `wait`s so that rank 0 is first to
    leave), and the exit. Under torchrun the line also goes
    to the launcher's error file, so torchrun's failure summary names the problem, not a missing traceback."""
    global _FAILING
    _FAILING = True  # this rank's own line is settled: a launcher's SIGTERM now only ends it
    line = f"error: {' '.join(message.split())}"
    if not quiet:
        typer.echo(line, err=True)
    _tell_launcher(line, code)
    if quiet and wait:  # torchrun stops the others once one rank exits: leave rank 0 the moment it needs to say it
        time.sleep(QUIET_RANK_WAIT_S)
    raise SystemExit(code)


def _tell_launcher(line: str, code: int = 1) -> None:
    """torchrun sets TORCHELASTIC_ERROR_FILE for each worker and shows that file's message as the failure's cause
    (torch.distributed.elastic.multiprocessing.errors' format); the file keeps diffbalance's own exit status (2: bad
    input, 1: a bug) as its errorCode, though torchrun itself exits 1."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    record = {"message": {"message": line, "errorCode": code,
                          "extraInfo": {"py_callstack": line, "timestamp": str(int(time.time())),
                                        "diffbalance_exit_status": str(code)}}}
    try:
        Path(path).write_text(json.dumps(record))
    except OSError:  # the launcher's file is a courtesy: the line was printed already
        pass


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args
    args = [a for a in args if a != DEBUG_FLAG]
    _quiet_libraries(debug)
    configure_threads()
    if distributed.launched():  # torchrun stops the other ranks with SIGTERM when one fails: end them in one line
        signal.signal(signal.SIGTERM, _stopped_by_launcher)
    ok = False
    try:
        _run_app(args, debug)
        ok = True
    finally:
        distributed.shutdown(ok)


def _run_app(args: list[str], debug: bool) -> None:
    try:
        code = app(args=args, prog_name="diffbalance", standalone_mode=False)
        if code == INTERRUPTED:  # newer Typer turns Ctrl-C into an exit code it returns, not an exception
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            raise SystemExit(code)
    except click_errors.NoArgsIsHelpError:  # the help is already printed
        raise SystemExit(2) from None
    except click_errors.UsageError as err:
        command = err.ctx.command_path if err.ctx else "diffbalance"
        fail(f"{err.format_message()} — fix: see `{command} --help`")
    except typer.Exit as done:
        raise SystemExit(done.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted: outputs written so far are complete; run the same command again to resume", err=True)
        raise SystemExit(INTERRUPTED) from None
    except distributed.PeerFailed as err:  # another rank's line: rank 0 says it once for the job
        if debug:
            traceback.print_exc()
        fail(str(err), quiet=not distributed.current().is_main, wait=False)
    except DiffbalanceError as err:
        if debug:
            traceback.print_exc()
        if getattr(err, "said_by_rank0", False):  # rank 0 prints this rank's line for the job
            fail(_on_rank(str(err)), quiet=True, wait=False)
        fail(_on_rank(str(err)), quiet=_said_by_rank0_before_joining(err))
    except SystemExit:
        raise
    except torch.distributed.DistError as err:  # a peer vanished mid-collective (killed, out of memory)
        if debug:
            traceback.print_exc()
        fail(_on_rank(f"lost contact with another process of this job ({str(err).splitlines()[0][:160]}) — fix: "
                      "see the first error line of the job; run the same command again to resume"), code=1)
    except Exception as err:  # noqa: BLE001 — anything else is a bug: one line, the traceback kept for the report
        if debug:
            traceback.print_exc()
            fail(f"internal error ({type(err).__name__}: {err})", code=1)
        log = _write_log(args)
        fail(_on_rank(f"internal error ({type(err).__name__}: {str(err)[:200]}) — fix: this is a bug in diffbalance; "
                      f"the traceback is in {log} (rerun with {DEBUG_FLAG} to print it)"), code=1)


def _said_by_rank0_before_joining(err: DiffbalanceError) -> bool:
    """Under a launcher, before the job is joined, every rank checks the same inputs and meets the same bad input:
    rank 0 says it, the others stay quiet (a rank's own problem, a RankError, is said by that rank)."""
    return (distributed.launched() and not torch.distributed.is_initialized()
            and os.environ.get("RANK", "0") != "0" and not isinstance(err, distributed.RankError))


def _on_rank(message: str) -> str:
    """A rank other than 0 of a launched job names itself."""
    d = distributed.current()
    return f"rank {d.rank}: {message}" if d.rank else message


def _stopped_by_launcher(signum, frame) -> None:
    if _FAILING:  # this rank is already failing with its own (or rank 0's) line: no second one
        os._exit(143)
    typer.echo("error: " + _on_rank("stopped by the launcher (another process of this job failed, or the job was "
                                    "cancelled) — fix: see the first error line of the job; run the same command "
                                    "again to resume"), err=True)
    os._exit(143)


def _quiet_libraries(debug: bool) -> None:
    """Library warnings and log chatter (deprecations, Hub retries) would break the one-line promise: they are shown
    only with --debug."""
    if debug:
        return
    warnings.simplefilter("ignore")
    for name in ("huggingface_hub", "diffusers", "transformers", "torch", "PIL"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _write_log(args: list[str]) -> str:
    """The current exception's traceback in a log file under the cache folder; returns its path."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = f"diffbalance {' '.join(args)}\n\n{traceback.format_exc()}"
    try:
        folder = cache_dir("logs")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"error-{stamp}-{os.getpid()}.log"
        path.write_text(text)
        return str(path)
    except OSError:  # no writable cache: fall back to the temp folder
        import tempfile

        with tempfile.NamedTemporaryFile("w", prefix="diffbalance-error-", suffix=".log", delete=False) as f:
            f.write(text)
        return f.name

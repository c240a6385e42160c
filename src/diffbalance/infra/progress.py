"""Progress bars (rich) shared by every long loop; silent when disabled or not on a terminal-like stream."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# emoji codes off: user text (method, class and run names) is printed as written; ":train:" in
# "cifar10:train:linear=500" is one of rich's emoji codes
console = Console(stderr=True, emoji=False)


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator:
    """Yield `advance(n=1, **fields)`; extra fields (loss=…, img_s=…) are shown after the bar. Drawn only on a
    terminal: in a log file a bar is noise, and a failed command's stderr keeps just its one `error:` line."""
    if not enabled or not console.is_terminal or console.quiet:  # quiet: a rank other than 0 of a launched job
        yield lambda n=1, **fields: None
        return
    bar = Progress(
        TextColumn("{task.description}", style="bold", markup=False),  # a description holds user text
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )
    with bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields) -> None:
            info = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            bar.update(task, advance=n, **({"info": info} if fields else {}))

        yield advance


def note(text: str) -> None:
    """`note: <text>` as exactly one line on stderr (rank 0 of a launched job), through the console so a live
    progress bar stays intact; never a Python warning."""
    line = f"note: {text}".replace("\n", "\\n").replace("\r", "\\r")
    console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)

"""User-facing errors: one line that names the problem and the fix.

The CLI turns every `DiffbalanceError` into that line on stderr and exit code 2, without a traceback.
Library code raises it for anything a user can cause (bad paths, bad config, impossible targets).
"""


class DiffbalanceError(Exception):
    """A problem the user can fix; `str(err)` is a single line: what is wrong, then how to fix it."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        message = problem if fix is None else f"{problem} — fix: {fix}"
        super().__init__(" ".join(message.split()))  # always one line

"""User-facing errors: one line that names the problem and the fix.

The CLI turns every `DiffbalanceError` into that line on stderr and exit code 2, without a traceback.
Library code raises it for anything a user can cause (bad paths, bad config, impossible targets). It is a
`ValueError`, as scikit-learn's and imbalanced-learn's input errors are, so code written against their estimators
(`except ValueError`, sklearn's estimator checks) treats a rebalancer's bad parameter or input the same way.
"""


class DiffbalanceError(ValueError):
    """A problem the user can fix; `str(err)` is a single line: what is wrong, then how to fix it."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        message = problem if fix is None else f"{problem} — fix: {fix}"
        super().__init__(" ".join(message.split()))  # always one line


class DiffbalanceTypeError(DiffbalanceError, TypeError):
    """An argument of the wrong type (a `TypeError` too, as scikit-learn raises for those)."""


def require_type(value, types, name: str, want: str) -> None:
    """A one-line DiffbalanceTypeError naming `name` unless `value` is one of `types` (bool is never an int here)."""
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        raise DiffbalanceTypeError(f"{name} must be {want}, got {type(value).__name__}", f"pass {name} as {want}")

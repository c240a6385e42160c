"""User-facing errors: one line that names the problem and the fix.

The CLI turns every `DiffbalanceError` into that line on stderr and exit code 2, without a traceback.
Library code raises it for anything a user can cause (bad paths, bad config, impossible targets). It is a
`ValueError`, as scikit-learn's and imbalanced-learn's input errors are, so code written against their estimators
(`except ValueError`, sklearn's estimator checks) treats a rebalancer's bad parameter or input the same way.
"""

from collections.abc import Iterable, Mapping
from numbers import Integral


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


def require_counts(value, name: str) -> list[int]:
    """`value` as a list of image counts (ints ≥ 0; numpy or 0-d torch integers too), or a one-line error naming
    `name`."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise DiffbalanceTypeError(f"{name} must be a list of image counts, got {type(value).__name__}",
                                   f"pass {name} as a list of ints ≥ 0, one per class")
    out = []
    for v in value:
        if hasattr(v, "ndim") and getattr(v, "ndim") == 0 and hasattr(v, "item"):
            v = v.item()  # a 0-d torch or numpy scalar
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise DiffbalanceTypeError(f"{name} must hold whole image counts, got {v!r}",
                                       f"pass {name} as a list of ints ≥ 0, one per class")
        out.append(int(v))
    if any(v < 0 for v in out):
        raise DiffbalanceError(f"{name} holds a negative count ({min(out)})", f"pass {name} as counts ≥ 0")
    return out

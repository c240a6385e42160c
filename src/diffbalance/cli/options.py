"""Options read one way by every command: JSON values (`--params`, `--config`, `--sampling-strategy`), where a bad
value is one line naming the option and an example of a good one, and options given under an old name."""

from __future__ import annotations

import json
from typing import Any

from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.renames import renamed


def json_value(text: str, option: str, example: str) -> Any:
    """`text` read as JSON; `option` ("--params") and `example` ('{"alpha": 0.6}') are for the error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DiffbalanceError(f"{option} is not valid JSON ({err.msg})", f"quote it, e.g. '{example}'") from None


def json_object(text: str, option: str, example: str) -> dict:
    """`text` read as a JSON object ({"key": value, …}), as `json_value`."""
    value = json_value(text, option, example)
    if not isinstance(value, dict):
        raise DiffbalanceError(f"{option} must be a JSON object", f"pass e.g. '{example}'")
    return value


def option_name(key: str) -> str:
    """A key as the command line spells it: sampling_strategy → --sampling-strategy."""
    return "--" + key.replace("_", "-")


def renamed_options(given: dict[str, Any], old_names: tuple[str, ...]) -> dict[str, Any]:
    """The options given (a None value: not given) by today's names: those of `old_names` (infra.renames) read as
    their new name, each with a note; an option given under both names is an error."""
    return renamed({k: v for k, v in given.items() if v is not None}, old_names, spell=option_name)

"""Prompts from class names. The paper's prompt is the bare class name ("cat"); a template can add context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from diffbalance.infra.errors import DiffbalanceError


def clean_class_name(name: str) -> str:
    """Folder-style names to words: "pickup_truck" → "pickup truck", "sea-lion" stays."""
    return " ".join(str(name).replace("_", " ").split())


def class_prompt(class_name: str, template: str = "{class}", overrides: Mapping[str, str] | None = None,
                 clean: bool = True, word: str | None = None) -> str:
    """The prompt of one class: its override if given (looked up by the raw name), else the template.
    `{class}` in either is replaced by `word` when given (an adapter's learned token or identifier), else by the
    (cleaned) class name."""
    if word is None:
        word = clean_class_name(class_name) if clean else str(class_name)
    text = (overrides or {}).get(str(class_name), template)
    return text.replace("{class}", word)


def check_overrides(overrides: Mapping[str, str], class_names: Sequence[str]) -> None:
    unknown = sorted(set(overrides) - {str(c) for c in class_names})
    if unknown:
        raise DiffbalanceError(
            f"class_prompts names unknown classes {', '.join(map(repr, unknown))}",
            f"key prompts by the dataset's class names: {', '.join(map(str, class_names))}",
        )

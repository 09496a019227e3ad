"""NeMo actions behind the default rails: thin wrappers that read NeMo's context.

The input rail flags a user message when any of `INPUT_CHECKS` does: the phrase patterns of
`guards.checks` (cheap, precise, few) or the trained classifier of `guards.injection`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from guards.checks import contains_secret, looks_like_injection
from guards.injection import default_classifier


def _classifier(text: str) -> bool:
    return default_classifier().is_injection(text)


INPUT_CHECKS: dict[str, Callable[[str], bool]] = {
    "patterns": looks_like_injection,
    "classifier": _classifier,
}
"""Named checks of the input rail, each True for an attack; `ripple eval guards` reports them one by one."""


def input_is_attack(text: str) -> bool:
    return any(check(text) for check in INPUT_CHECKS.values())


async def ripple_check_input(context: dict[str, Any] | None = None) -> bool:
    """True when the user message may pass."""
    text = str((context or {}).get("user_message") or "")
    return not input_is_attack(text)


async def ripple_check_output(context: dict[str, Any] | None = None) -> bool:
    """True when the bot message may pass."""
    text = str((context or {}).get("bot_message") or "")
    return not contains_secret(text)


ACTIONS = {
    "ripple_check_input": ripple_check_input,
    "ripple_check_output": ripple_check_output,
}

"""NeMo actions behind the default rails: thin wrappers that read NeMo's context."""

from __future__ import annotations

from typing import Any

from guards.checks import contains_secret, looks_like_injection


async def ripple_check_input(context: dict[str, Any] | None = None) -> bool:
    """True when the user message may pass."""
    text = str((context or {}).get("user_message") or "")
    return not looks_like_injection(text)


async def ripple_check_output(context: dict[str, Any] | None = None) -> bool:
    """True when the bot message may pass."""
    text = str((context or {}).get("bot_message") or "")
    return not contains_secret(text)


ACTIONS = {
    "ripple_check_input": ripple_check_input,
    "ripple_check_output": ripple_check_output,
}

"""NeMo actions behind the default rails: thin wrappers that read NeMo's context.

The input rail flags a user message when any of `INPUT_CHECKS` does: the phrase patterns of
`guards.checks` (cheap, precise, few) or the trained classifier of `guards.injection`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any

from guards.checks import (
    contains_secret,
    looks_like_injection,
    looks_planted,
    strip_hidden_but_joiners,
)
from guards.grounding import Groundedness
from guards.injection import default_classifier
from guards.masking import mask_sensitive
from guards.views import views
from indexer.types import Passage


def _patterns(text: str) -> bool:
    return any(looks_like_injection(view) for view in views(text))


def _classifier(text: str) -> bool:
    classifier = default_classifier()
    return any(classifier.is_injection(view) for view in views(text))


INPUT_CHECKS: dict[str, Callable[[str], bool]] = {
    "patterns": _patterns,
    "classifier": _classifier,
}
"""Named checks of the input rail, each True for an attack in the text or in a reading of it that undoes
an obfuscation (`guards.views`); `ripple eval guards` reports them one by one."""


def input_is_attack(text: str) -> bool:
    return any(check(text) for check in INPUT_CHECKS.values())


INLINE_CHARS = 2048
"""A longer user message is checked off the event loop: the checks' work grows with the text, and 1 MiB held
the loop for seconds, stalling every other request. A shorter one takes well under a millisecond, less
than the hop to a thread."""


async def ripple_check_input(context: dict[str, Any] | None = None) -> bool:
    """True when the user message may pass."""
    text = str((context or {}).get("user_message") or "")
    if len(text) > INLINE_CHARS:
        return not await asyncio.to_thread(input_is_attack, text)
    return not input_is_attack(text)


async def ripple_check_output(context: dict[str, Any] | None = None) -> bool:
    """True when the bot message may pass."""
    text = str((context or {}).get("bot_message") or "")
    return not contains_secret(text)


async def ripple_mask_output(context: dict[str, Any] | None = None) -> str:
    """The bot message with sensitive data masked (the rail's answer is then "modified")."""
    return mask_sensitive(str((context or {}).get("bot_message") or ""))


def check_chunk(text: str) -> str | None:
    """A retrieved chunk without its hidden characters, or None when it carries planted instructions, in
    its text or in a reading of it that undoes an obfuscation (`guards.views`)."""
    visible = strip_hidden_but_joiners(text)  # a joiner is kept only between letters: no blank passage keeps one
    if not visible.strip() or any(looks_planted(view) for view in views(text)):
        return None
    return visible


async def ripple_check_retrieval(
    chunks: list[str] | None = None, context: dict[str, Any] | None = None
) -> list[str | None] | str:
    """The retrieval rail. Ripple passes `chunks` and gets one entry per chunk: its cleaned text, or None
    when it is flagged. Inside NeMo's own generation flow (no `chunks`), it cleans `$relevant_chunks`,
    a string of paragraphs, and leaves out the flagged ones."""
    if chunks is not None:
        return [check_chunk(c) for c in chunks]
    paragraphs = str((context or {}).get("relevant_chunks") or "").split("\n\n")
    return "\n\n".join(c for c in map(check_chunk, paragraphs) if c is not None)


SOURCES: ContextVar[Sequence[Passage]] = ContextVar("ripple_sources", default=())
"""The passages the model was given for the answer being checked: set around each output check."""


def grounding_actions(judge: Groundedness) -> dict[str, Callable[..., Awaitable[Any]]]:
    """The groundedness actions, bound to a judge (which holds the embedder). They read the answer from
    `$bot_message`, and the passages the model was given (with their stored vectors) from `SOURCES`,
    which the caller of the check sets. They do not travel in NeMo's context: NeMo serialises its
    messages for history keys at every check, and 5 x 384 floats cost milliseconds there."""

    def _inputs(context: dict[str, Any] | None) -> tuple[str, Sequence[Passage]]:
        return str((context or {}).get("bot_message") or ""), SOURCES.get()

    async def ripple_check_groundedness(context: dict[str, Any] | None = None) -> bool:
        """True when every judged sentence is supported by a source (the refusing rail)."""
        return not await asyncio.to_thread(judge.unsupported, *_inputs(context))

    async def ripple_flag_groundedness(context: dict[str, Any] | None = None) -> str:
        """The answer with each unsupported sentence marked (the flagging rail)."""
        return await asyncio.to_thread(judge.flag, *_inputs(context))

    return {
        "ripple_check_groundedness": ripple_check_groundedness,
        "ripple_flag_groundedness": ripple_flag_groundedness,
    }


ACTIONS = {
    "ripple_check_input": ripple_check_input,
    "ripple_check_output": ripple_check_output,
    "ripple_mask_output": ripple_mask_output,
    "ripple_check_retrieval": ripple_check_retrieval,
}

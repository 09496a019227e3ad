"""The `Guard` role: what the runtime asks of any rails implementation, and its verdict.

A verdict is data, not an exception: a refused request is answered normally with
`finish_reason: "content_filter"`. Streaming windows live with the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from indexer.types import Passage

Message = Mapping[str, str]


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    rail: str | None = None
    content: str | None = None
    """The content after the rails, when a rail modified it (masking, say)."""

    @classmethod
    def ok(cls) -> Verdict:
        return cls(allowed=True)


class Guard(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def ready(self) -> bool: ...

    @property
    def has_output_rails(self) -> bool:
        """False when answers need no output check (then streaming passes tokens straight through)."""
        ...

    async def check_input(self, messages: Sequence[Message]) -> Verdict:
        """Every user message is checked, earlier turns too: an attack in an earlier turn reaches the model
        as surely as one in the last. A rewrite (`content`) is of the last message. System and developer
        messages are not: they are the application's own instructions, which read like injections to the
        classifier ("You are a helpful assistant. Answer in French. Do not mention competitors." is
        flagged), and a deployment where end users could write them cannot trust its system prompt anyway.
        Assistant turns are not either: they are the model's own answers, which may quote an attack from
        the documents."""
        ...

    async def check_output(
        self,
        messages: Sequence[Message],
        answer: str,
        sources: Sequence[Passage] = (),
    ) -> Verdict:
        """`sources`: the passages the model was given (with their stored vectors), for rails that judge
        groundedness."""
        ...

    async def check_retrieval(self, chunks: Sequence[str]) -> list[str | None]:
        """Each retrieved chunk as the prompt may carry it (cleaned), or None to leave it out (flagged)."""
        ...


def user_written(messages: Sequence[Message]) -> list[str]:
    """The contents of the user messages, earlier turns included."""
    return [m["content"] for m in messages if m["role"] == "user"]

"""The `Generator` role: chat messages and sampling options in, streamed text deltas out.

Implementations: `VllmGenerator` (vLLM's in-process async engine, continuous batching),
`OpenAIUpstreamGenerator` (any OpenAI-compatible server or pool, e.g. `vllm serve`), and
`FakeGenerator` (scripted, for tests). Every implementation must stop the work it started when its
iterator is closed early (`aclose()`), since that is how a client's disconnect reaches the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

Message = dict[str, str]


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_k: int | None = None
    min_tokens: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    ignore_eos: bool = False


@dataclass(frozen=True)
class Delta:
    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    """Cumulative count of generated tokens so far."""


class Generator(Protocol):
    @property
    def model_id(self) -> str: ...

    @property
    def ready(self) -> bool: ...

    @property
    def healthy(self) -> bool:
        """Whether `/ready` should say the generator can take traffic now (a pool may be `ready` to try a
        request while every server in it is set aside)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def generate(
        self, request_id: str, messages: Sequence[Message], options: SamplingOptions
    ) -> AsyncGenerator[Delta, None]: ...

    async def count_prompt_tokens(self, messages: Sequence[Message]) -> int | None:
        """Tokens the chat-templated prompt takes, or None where the generator cannot tell."""
        ...

    def unfinished_requests(self) -> int | None:
        """Requests the engine still holds (running or waiting), or None where unknown."""
        ...


@dataclass
class FakeGenerator:
    """Streams a scripted reply word by word; records what it was asked and what was aborted."""

    reply: str = "Ripple answers from your documents [1]."
    delay: float = 0.0
    model_id: str = "fake-model"
    calls: list[tuple[str, list[Message], SamplingOptions]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    _running: set[str] = field(default_factory=set)
    ready: bool = False

    @property
    def healthy(self) -> bool:
        return self.ready

    async def start(self) -> None:
        self.ready = True

    async def close(self) -> None:
        self.ready = False

    async def count_prompt_tokens(self, messages: Sequence[Message]) -> int | None:
        return sum(len(m["content"].split()) + 4 for m in messages)

    def unfinished_requests(self) -> int | None:
        return len(self._running)

    async def generate(
        self, request_id: str, messages: Sequence[Message], options: SamplingOptions
    ) -> AsyncGenerator[Delta, None]:
        self.calls.append((request_id, [dict(m) for m in messages], options))
        prompt_tokens = await self.count_prompt_tokens(messages)
        words = self.reply.split(" ")
        limit = min(len(words), options.max_tokens)
        self._running.add(request_id)
        done = False
        try:
            for i, word in enumerate(words[:limit]):
                if self.delay:
                    await asyncio.sleep(self.delay)
                last = i == limit - 1
                yield Delta(
                    text=word if i == 0 else " " + word,
                    finish_reason=("stop" if limit == len(words) else "length") if last else None,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=i + 1,
                )
            done = True
        finally:
            self._running.discard(request_id)
            if not done:
                self.aborted.append(request_id)

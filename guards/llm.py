"""The `ripple` NeMo LLM provider: rails' LLM calls go to the runtime's own engine, in process.

NeMo 0.24 builds its models through registered provider classes (`cls(model=..., **parameters)`),
so the provider is a small class bound to a chat function with `bind_provider`. The chat function
takes OpenAI-style messages and sampling options and yields text deltas; the runtime supplies one
backed by its generator, so no HTTP hop and no second model is involved.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from nemoguardrails.llm.providers import register_provider
from nemoguardrails.types import LLMResponse, LLMResponseChunk

ChatFn = Callable[[Sequence[dict[str, str]], dict[str, Any]], AsyncIterator[str]]

PROVIDER_NAME = "ripple"


def _to_messages(prompt: Any) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = []
    for message in prompt:
        role = getattr(message, "role", None) or message.get("role")
        content = getattr(message, "content", None) if not isinstance(message, dict) else message.get("content")
        messages.append({"role": str(getattr(role, "value", role)), "content": str(content or "")})
    return messages


class RippleLLM:
    """A NeMo `LLMModel` over a chat function; `bind_provider` sets `chat` per engine."""

    chat: ChatFn | None = None

    def __init__(self, model: str = "ripple", **options: Any) -> None:
        self._model = model
        self._options = options

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def provider_name(self) -> str | None:
        return PROVIDER_NAME

    @property
    def provider_url(self) -> str | None:
        return None

    def _chat(self) -> ChatFn:
        if self.chat is None:
            raise RuntimeError("the ripple provider has no engine bound: call guards.llm.bind_provider first")
        return self.chat

    async def generate_async(self, prompt: Any, *, stop: list[str] | None = None, **kwargs: Any) -> LLMResponse:
        parts = [delta async for delta in self._chat()(_to_messages(prompt), {**self._options, **kwargs, "stop": stop})]
        return LLMResponse(content="".join(parts), model=self._model)

    async def stream_async(
        self, prompt: Any, *, stop: list[str] | None = None, **kwargs: Any
    ) -> AsyncIterator[LLMResponseChunk]:
        async for delta in self._chat()(_to_messages(prompt), {**self._options, **kwargs, "stop": stop}):
            yield LLMResponseChunk(delta_content=delta, model=self._model)


def bind_provider(chat: ChatFn) -> type[RippleLLM]:
    """Register `ripple` as a NeMo provider whose calls go to `chat`; returns the bound class."""
    bound = type("BoundRippleLLM", (RippleLLM,), {"chat": staticmethod(chat)})
    register_provider(PROVIDER_NAME, bound)
    return bound

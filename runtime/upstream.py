"""`OpenAIUpstreamGenerator`: the Generator role on OpenAI-compatible servers (a `vllm serve` pool).

For deployments that scale vLLM separately from Ripple. Requests go round-robin over the
configured base URLs (put a real load balancer in front for anything smarter). The official
`openai` client does the HTTP, SSE parsing and its retries (connection failures, timeouts, 429 and
5xx, `RIPPLE_UPSTREAM_RETRIES` times with backoff), which happen only before the stream starts, so a
retry never duplicates streamed text. A stream that stalls past `RIPPLE_UPSTREAM_TIMEOUT_S` or breaks
off is reported (`UpstreamError`), not retried. Closing the iterator closes the HTTP stream,
which makes vLLM abort the request. Prompt token counts are unknown before the upstream answers.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from runtime.errors import BadRequestError, NotReadyError, UpstreamError
from runtime.generation import Delta, Message, SamplingOptions

logger = logging.getLogger(__name__)


class OpenAIUpstreamGenerator:
    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        served_name: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        http_client: Any = None,
    ) -> None:
        if not base_urls:
            raise ValueError("OpenAIUpstreamGenerator needs at least one base URL")
        self._base_urls = list(base_urls)
        self._served_name = served_name
        self._model = model
        self._api_key = api_key or "unused"
        self._timeout = timeout
        self._max_retries = max_retries
        self._http_client = http_client
        self._clients: list[Any] = []
        self._next: Any = None
        self._ready = False

    @property
    def model_id(self) -> str:
        return self._served_name

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        import openai

        self._clients = [
            openai.AsyncOpenAI(
                base_url=url,
                api_key=self._api_key,
                timeout=self._timeout,
                max_retries=self._max_retries,
                http_client=self._http_client,
            )
            for url in self._base_urls
        ]
        self._next = itertools.cycle(self._clients)
        if self._model is None:
            try:
                models = await self._clients[0].models.list()
            except openai.OpenAIError as exc:
                raise UpstreamError(f"cannot list models at {self._base_urls[0]}: {exc}") from exc
            if not models.data:
                raise UpstreamError(f"{self._base_urls[0]} serves no model")
            self._model = models.data[0].id
        self._ready = True
        logger.info("upstream generator ready: %s via %s", self._model, ", ".join(self._base_urls))

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        self._clients = []
        self._ready = False

    async def count_prompt_tokens(self, messages: Sequence[Message]) -> int | None:
        return None

    def unfinished_requests(self) -> int | None:
        return None

    async def generate(
        self, request_id: str, messages: Sequence[Message], options: SamplingOptions
    ) -> AsyncGenerator[Delta, None]:
        import httpx
        import openai

        if not self._ready:
            raise NotReadyError("the upstream generator is not started")
        client = next(self._next)
        extra_body = {
            k: v
            for k, v in {
                "top_k": options.top_k,
                "min_tokens": options.min_tokens,
                "repetition_penalty": options.repetition_penalty,
                "ignore_eos": options.ignore_eos or None,
            }.items()
            if v is not None
        }
        try:
            stream = await client.chat.completions.create(
                model=self._model,
                messages=list(messages),
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=options.max_tokens,
                temperature=options.temperature,
                top_p=options.top_p,
                stop=list(options.stop) or None,
                seed=options.seed,
                presence_penalty=options.presence_penalty,
                frequency_penalty=options.frequency_penalty,
                extra_body=extra_body or None,
                extra_headers={"X-Request-Id": request_id},
            )
        except openai.BadRequestError as exc:
            raise BadRequestError(f"the upstream model refused the request: {exc.message}") from exc
        except openai.OpenAIError as exc:
            raise UpstreamError(f"the upstream generator failed: {exc}") from exc
        completion_tokens = 0
        finish: str | None = None
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    yield Delta(
                        text="",
                        finish_reason=finish or "stop",
                        prompt_tokens=chunk.usage.prompt_tokens,
                        completion_tokens=chunk.usage.completion_tokens,
                    )
                    return
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                text = choice.delta.content or ""
                if choice.finish_reason is not None:
                    finish = choice.finish_reason
                if text:
                    completion_tokens += 1
                    yield Delta(text=text, completion_tokens=completion_tokens)
            # A server that ignores include_usage ends without a usage chunk.
            yield Delta(text="", finish_reason=finish or "stop", completion_tokens=completion_tokens)
        except (openai.OpenAIError, httpx.HTTPError) as exc:  # httpx's own errors arrive unwrapped mid-stream
            raise UpstreamError(f"the upstream stream broke off: {exc!r}") from exc
        finally:
            await stream.close()

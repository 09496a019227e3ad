"""OpenAIUpstreamGenerator against a scripted OpenAI-compatible server (httpx.MockTransport)."""

from __future__ import annotations

import json
from contextlib import aclosing

import httpx
import pytest

from runtime.errors import BadRequestError, UpstreamError
from runtime.generation import SamplingOptions
from runtime.upstream import OpenAIUpstreamGenerator


def sse_body(*payloads: dict[str, object]) -> bytes:
    return b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads) + b"data: [DONE]\n\n"


def chunk(content: str | None, finish: str | None = None) -> dict[str, object]:
    delta = {"content": content} if content is not None else {}
    return {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class Upstream:
    """A scripted server: records requests, answers /models and a chat stream."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/models"):
            return httpx.Response(
                200, json={"object": "list", "data": [{"id": "smol", "object": "model", "created": 0, "owned_by": "x"}]}
            )
        if self.status != 200:
            return httpx.Response(
                self.status, json={"error": {"message": "nope", "type": "x", "param": None, "code": self.status}}
            )
        usage = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
        }
        body = sse_body(chunk("Hel"), chunk("lo"), chunk(None, "stop"), usage)
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


async def started(upstream: Upstream, urls: list[str] | None = None, retries: int = 2) -> OpenAIUpstreamGenerator:
    gen = OpenAIUpstreamGenerator(
        urls or ["http://pool-a/v1"],
        served_name="ripple",
        max_retries=retries,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(upstream)),
    )
    await gen.start()
    return gen


async def test_streams_deltas_then_usage_and_passes_vllm_extras() -> None:
    upstream = Upstream()
    gen = await started(upstream)
    options = SamplingOptions(max_tokens=5, temperature=0.0, top_k=3, ignore_eos=True, stop=("END",))
    deltas = [d async for d in gen.generate("rid-1", [{"role": "user", "content": "hi"}], options)]
    assert "".join(d.text for d in deltas) == "Hello"
    assert deltas[-1].finish_reason == "stop" and deltas[-1].prompt_tokens == 11 and deltas[-1].completion_tokens == 2
    body = json.loads(upstream.requests[-1].content)
    assert body["model"] == "smol" and body["stream"] is True and body["max_tokens"] == 5
    assert body["top_k"] == 3 and body["ignore_eos"] is True and body["stop"] == ["END"]
    assert upstream.requests[-1].headers["x-request-id"] == "rid-1"
    await gen.close()


async def test_requests_go_round_robin_over_the_pool() -> None:
    upstream = Upstream()
    gen = await started(upstream, ["http://pool-a/v1", "http://pool-b/v1"])
    for _ in range(4):
        async with aclosing(
            gen.generate("r", [{"role": "user", "content": "hi"}], SamplingOptions(max_tokens=2))
        ) as it:
            async for _ in it:
                pass
    hosts = [r.url.host for r in upstream.requests if r.url.path.endswith("/completions")]
    assert hosts == ["pool-a", "pool-b", "pool-a", "pool-b"]


@pytest.mark.parametrize("status,error", [(400, BadRequestError), (500, UpstreamError)])
async def test_upstream_errors_are_translated(status: int, error: type[Exception]) -> None:
    failing = Upstream(status)
    gen = await started(failing, retries=1)
    with pytest.raises(error):
        async for _ in gen.generate("r", [{"role": "user", "content": "hi"}], SamplingOptions(max_tokens=2)):
            pass
    chat_calls = [r for r in failing.requests if r.url.path.endswith("/completions")]
    assert len(chat_calls) == (2 if status >= 500 else 1), "5xx retried before the stream, 4xx not"

"""OpenAIUpstreamGenerator against a scripted OpenAI-compatible server (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
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


USAGE = {
    "id": "x",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "m",
    "choices": [],
    "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
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
        body = sse_body(chunk("Hel"), chunk("lo"), chunk(None, "stop"), USAGE)
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


async def started(upstream: Upstream, urls: list[str] | None = None, retries: int = 2) -> OpenAIUpstreamGenerator:
    gen = OpenAIUpstreamGenerator(
        urls or ["http://pool-a/v1"],
        served_name="ripple",
        max_retries=retries,
        probe_interval=0,
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


class Pool:
    """Scripted servers by host: `behaviour[host]` is "ok", a status code, "refuse" (no connection), or a
    list of SSE payloads to stream as they are."""

    def __init__(self, **behaviour: object) -> None:
        self.behaviour = behaviour
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host.replace("-", "_")
        what = self.behaviour.get(host, "ok")
        if request.url.path.endswith("/models"):
            if what == "refuse":
                raise httpx.ConnectError("connection refused", request=request)
            model = "other" if what == "other-model" else "smol"
            return httpx.Response(200, json={"object": "list", "data": [{"id": model, "object": "model"}]})
        self.calls.append(host)
        if what == "refuse":
            raise httpx.ConnectError("connection refused", request=request)
        if isinstance(what, int):
            error = {"error": {"message": "busy" if what in (429, 503) else "nope", "type": "x", "code": what}}
            return httpx.Response(what, json=error, headers={"retry-after": "3"} if what in (429, 503) else {})
        payloads = what if isinstance(what, list) else [chunk("Hel"), chunk("lo"), chunk(None, "stop"), USAGE]
        body = b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads if p != "cut")
        if not (isinstance(what, list) and what and what[-1] == "cut"):
            body += b"data: [DONE]\n\n"
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


async def pool_of(pool: Pool, hosts: list[str], retries: int = 2, cooldown: float = 10.0, model: str | None = None):  # type: ignore[no-untyped-def]
    gen = OpenAIUpstreamGenerator(
        [f"http://{h.replace('_', '-')}/v1" for h in hosts],
        served_name="ripple",
        model=model,
        max_retries=retries,
        cooldown=cooldown,
        probe_interval=0,  # no probe between the scripted calls (its own test drives it)
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(pool)),
    )
    await gen.start()
    return gen


async def answer(gen: OpenAIUpstreamGenerator) -> str:
    deltas = [d async for d in gen.generate("r", [{"role": "user", "content": "hi"}], SamplingOptions(max_tokens=2))]
    return "".join(d.text for d in deltas)


async def test_a_failing_server_is_set_aside_and_the_request_goes_to_the_next() -> None:
    for failure in (500, "refuse"):
        pool = Pool(pool_a=failure)
        gen = await pool_of(pool, ["pool_a", "pool_b"])
        assert [await answer(gen) for _ in range(3)] == ["Hello"] * 3
        assert pool.calls.count("pool_a") <= 1 and pool.calls.count("pool_b") == 3, (failure, pool.calls)
        assert gen.healthy, "one server is still up"


async def test_busy_servers_give_a_429_with_their_retry_after_and_no_wait() -> None:
    from runtime.errors import OverloadedError

    pool = Pool(pool_a=503, pool_b=429)
    gen = await pool_of(pool, ["pool_a", "pool_b"])
    with pytest.raises(OverloadedError) as refused:
        await answer(gen)
    assert refused.value.retry_after == 3 and sorted(pool.calls) == ["pool_a", "pool_b"], pool.calls
    pool.behaviour["pool_b"] = "ok"
    with pytest.raises(OverloadedError):  # both are set aside for their Retry-After: no call is made
        await answer(gen)
    assert len(pool.calls) == 2


async def test_ready_follows_the_pool_and_a_server_is_tried_again_after_its_time_aside() -> None:
    pool = Pool(pool_a="refuse")
    gen = await pool_of(pool, ["pool_a"], retries=0, cooldown=0.05, model="smol")
    assert gen.ready and not gen.healthy, "the only server could not be reached at start: /ready says so"
    await asyncio.sleep(0.06)
    assert gen.healthy
    pool.behaviour["pool_a"] = "ok"
    assert await answer(gen) == "Hello"


async def test_a_server_that_does_not_serve_the_model_is_never_used() -> None:
    pool = Pool(pool_a="other-model")
    gen = await pool_of(pool, ["pool_a", "pool_b"], model="smol")
    assert [await answer(gen) for _ in range(2)] == ["Hello"] * 2 and pool.calls == ["pool_b", "pool_b"]
    only = await pool_of(Pool(pool_a="other-model"), ["pool_a"], model="smol")
    assert not only.ready and not only.healthy
    with pytest.raises(UpstreamError, match="no upstream server serves 'smol'"):
        await answer(only)


async def test_usage_on_every_chunk_still_streams_the_text() -> None:
    """vLLM with --enable-force-include-usage puts usage on every chunk; the first one ended the answer."""
    every = [{**chunk("Hel"), "usage": USAGE["usage"]}, {**chunk("lo", "stop"), "usage": USAGE["usage"]}, USAGE]
    gen = await pool_of(Pool(pool_a=every), ["pool_a"])
    deltas = [d async for d in gen.generate("r", [{"role": "user", "content": "hi"}], SamplingOptions(max_tokens=2))]
    assert "".join(d.text for d in deltas) == "Hello" and deltas[-1].finish_reason == "stop"
    assert deltas[-1].prompt_tokens == 11


async def test_a_stream_cut_short_or_refused_inside_is_reported_as_such() -> None:
    cut = await pool_of(Pool(pool_a=[chunk("Mira Okonk"), "cut"]), ["pool_a"])
    with pytest.raises(UpstreamError, match="without a finish reason"):
        await answer(cut)
    too_long = {"error": {"message": "This model's maximum context length is 4096 tokens", "code": 400}}
    refused = await pool_of(Pool(pool_a=[too_long]), ["pool_a"])
    with pytest.raises(BadRequestError) as error:
        await answer(refused)
    assert "maximum context length" in str(error.value) and "APIError(" not in str(error.value)


async def test_a_busy_answer_without_retry_after_is_retried_on_a_lone_server() -> None:
    """A proxy's 503 (no Retry-After) before the answer: retried after a short wait, as nothing was sent;
    still busy after the retries, a 429 (busy), not a 502 (failed)."""
    from runtime.errors import OverloadedError

    pool = Pool(pool_a=[503, "ok"])

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/completions") and pool.behaviour["pool_a"] == [503, "ok"]:
            pool.behaviour["pool_a"] = "ok"
            pool.calls.append("pool_a")
            return httpx.Response(503, json={"error": {"message": "overloaded", "code": 503}})
        return pool(request)

    gen = OpenAIUpstreamGenerator(
        ["http://pool-a/v1"], served_name="ripple", http_client=httpx.AsyncClient(transport=httpx.MockTransport(flaky))
    )
    await gen.start()
    assert await answer(gen) == "Hello" and pool.calls == ["pool_a", "pool_a"]
    assert gen.healthy, "a server that answered is up again at once"
    busy = await pool_of(Pool(pool_a=503), ["pool_a"], retries=2)
    with pytest.raises(OverloadedError):
        await answer(busy)


async def test_a_request_tries_a_pool_set_aside_whole() -> None:
    """After a failure set the lone server aside, /ready says 503 (healthy is false), yet a request that
    comes anyway tries that server (it may be back), rather than being refused unseen."""
    pool = Pool(pool_a=500)
    gen = await pool_of(pool, ["pool_a"], retries=0)
    with pytest.raises(UpstreamError):
        await answer(gen)
    assert gen.ready and not gen.healthy
    pool.behaviour["pool_a"] = "ok"
    assert await answer(gen) == "Hello" and gen.healthy


async def test_the_probe_sets_a_silent_server_aside_and_brings_it_back_without_a_request() -> None:
    pool = Pool()
    gen = OpenAIUpstreamGenerator(
        ["http://pool-a/v1", "http://pool-b/v1"],
        served_name="ripple",
        cooldown=60.0,
        probe_interval=0.02,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(pool)),
    )
    await gen.start()
    try:
        pool.behaviour["pool_a"] = "refuse"
        await asyncio.sleep(0.1)
        assert [await answer(gen) for _ in range(3)] == ["Hello"] * 3
        assert pool.calls == ["pool_b"] * 3, "no request was spent finding pool-a down"
        pool.behaviour["pool_b"] = "refuse"
        await asyncio.sleep(0.1)
        assert gen.ready and not gen.healthy, "/ready is 503 with no server answering, before any request"
        pool.behaviour["pool_a"] = "ok"
        await asyncio.sleep(0.1)
        assert gen.healthy, "back once it answers, not after its 60 s aside"
        assert await answer(gen) == "Hello" and pool.calls[-1] == "pool_a"
        pool.behaviour.update(pool_a="other-model", pool_b="ok")  # pool-a restarted with another model
        await asyncio.sleep(0.1)
        del pool.calls[:]
        assert [await answer(gen) for _ in range(2)] == ["Hello"] * 2 and pool.calls == ["pool_b"] * 2
        pool.behaviour["pool_a"] = "ok"
        await asyncio.sleep(0.1)
        assert [await answer(gen) for _ in range(2)] == ["Hello"] * 2 and sorted(pool.calls[2:]) == ["pool_a", "pool_b"]
    finally:
        await gen.close()


async def test_a_server_set_aside_by_a_failed_answer_keeps_its_time_aside_though_it_lists_models() -> None:
    """An engine failing every answer behind an API server that still lists its models must not flap back."""
    pool = Pool(pool_a=500)
    gen = await pool_of(pool, ["pool_a", "pool_b"], retries=1)
    assert await answer(gen) == "Hello"
    await gen._probe(gen._servers[0])  # the probe is driven by hand: pool_of starts none
    assert [await answer(gen) for _ in range(2)] == ["Hello"] * 2
    assert pool.calls.count("pool_a") == 1, pool.calls


async def test_credentials_in_a_url_reach_the_server_but_no_message_or_log(caplog: pytest.LogCaptureFixture) -> None:
    """A review found `http://user:secret@host/v1` in the 502 sent to clients, and in every log line that
    named the server (httpx's own request lines among them)."""
    caplog.set_level(logging.DEBUG)
    pool = Pool(pool_a=500, pool_b="other-model")
    auth: list[str | None] = []

    def seen(request: httpx.Request) -> httpx.Response:
        auth.append(request.headers.get("authorization"))
        return pool(request)

    async def started(url: str) -> OpenAIUpstreamGenerator:
        client = httpx.AsyncClient(transport=httpx.MockTransport(seen))
        gen = OpenAIUpstreamGenerator([url], served_name="ripple", model="smol", max_retries=0, http_client=client)
        await gen.start()
        return gen

    failing = await started("http://svc-user:s3cr3t%40token@pool-a:8000/v1")
    with pytest.raises(UpstreamError) as failed:
        await answer(failing)
    assert str(failed.value).startswith("the upstream servers failed: http://pool-a:8000/v1: HTTP 500"), failed.value
    unserving = await started("https://svc-user:s3cr3t%40token@pool-b/v1")
    with pytest.raises(UpstreamError) as unserved:
        await answer(unserving)
    assert str(unserved.value).startswith("no upstream server serves 'smol': https://pool-b/v1 "), unserved.value
    for gen in (failing, unserving):
        await gen.close()
    for shown in (str(failed.value), str(unserved.value), caplog.text):
        assert "svc-user" not in shown and "s3cr3t" not in shown, shown
    assert "upstream http://pool-a:8000/v1 set aside" in caplog.text
    basic = "Basic " + base64.b64encode(b"svc-user:s3cr3t@token").decode()
    assert auth and set(auth) == {basic}, "the credentials still go to the servers, as Basic auth"

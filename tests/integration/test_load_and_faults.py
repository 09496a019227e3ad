"""Load and faults against the real server process: admission bounds, limits, deadlines, cancellation,
graceful drain and engine death. The session's server runs with 4 requests in flight and 2 waiting
for their first token (see conftest)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.integration.conftest import CORPUS, RIPPLE, Server, free_port, ripple_env, run_ripple
from tests.sse_client import parse_events

QUESTION = "Who designed the Zorblax protocol?"
LONG = {"stream": True, "max_tokens": 400, "ignore_eos": True}


def chat(question: str = QUESTION, **extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": question}], **extra}


def wait_for(condition: object, seconds: float, what: str) -> float:
    """Poll `condition()` until true; return how long it took, or fail saying `what` did not happen."""
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - start < seconds, f"{what} did not happen within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - start


def next_frame(lines: Iterator[str]) -> str:
    """The next SSE line that carries something (frames are separated by blank lines)."""
    return next(line for line in lines if line)


def open_stream(stack: ExitStack, server: Server, body: dict[str, object]) -> Iterator[str]:
    """Start a stream and read its first frame (so the request is past its first token). Keep the
    returned iterator: when it is garbage-collected, httpx closes the stream."""
    response = stack.enter_context(
        httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120)
    )
    assert response.status_code == 200, response.read()
    lines = response.iter_lines()
    assert next(lines).startswith("data: ")
    return lines


def test_bounds_refuse_with_429_before_any_retrieval_or_engine_work(server: Server) -> None:
    # A burst of 6 arrives at once: 2 may wait for a first token (RIPPLE_MAX_WAITING_REQUESTS=2), the
    # other 4 are refused at the door. A long prompt keeps the admitted ones in prefill meanwhile.
    question = QUESTION + " Background: " + "the protocol was drafted in a long meeting. " * 150
    retrievals = server.metric_total("ripple_retrieval_seconds_count")
    refused_waiting = server.metric_total("ripple_rejected_total", 'reason="waiting"')
    barrier = threading.Barrier(6)
    statuses: list[int] = []
    retry_after: list[str | None] = []

    def one() -> None:
        barrier.wait()
        r = httpx.post(f"{server.base_url}/v1/chat/completions", json=chat(question, max_tokens=4), timeout=300)
        statuses.append(r.status_code)
        retry_after.append(r.headers.get("retry-after"))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 200, 429, 429, 429, 429], statuses
    assert all(ra for s, ra in zip(statuses, retry_after, strict=True) if s == 429), "429s carry Retry-After"
    assert server.metric_total("ripple_rejected_total", 'reason="waiting"') - refused_waiting == 4
    assert server.metric_total("ripple_retrieval_seconds_count") - retrievals == 2, "refused requests retrieved"

    # Four streams past their first token fill RIPPLE_MAX_CONCURRENT_REQUESTS=4; a fifth is refused.
    with ExitStack() as stack:
        streams = [open_stream(stack, server, chat(**LONG)) for _ in range(4)]
        assert server.metric("ripple_requests_in_flight") == 4
        r = httpx.post(f"{server.base_url}/v1/chat/completions", json=chat(), timeout=30)
        assert r.status_code == 429 and r.headers["retry-after"], r.text
        assert "RIPPLE_MAX_CONCURRENT_REQUESTS" in r.json()["error"]["message"]
        assert all(next_frame(s).startswith("data: ") for s in streams), "the admitted streams go on"
    wait_for(lambda: server.metric("ripple_engine_unfinished_requests") == 0, 5, "the engine emptying")
    assert server.metric("ripple_requests_in_flight") == 0 and server.metric("ripple_requests_waiting") == 0


def test_hostile_requests_are_refused_in_words_with_the_engine_untouched(server: Server) -> None:
    prompts = server.metric_total("vllm:prompt_tokens_total")
    retrievals = server.metric_total("ripple_retrieval_seconds_count")
    cases: list[tuple[dict[str, object] | bytes, int, str]] = [
        (b'{"messages": [{"role": "user", "content": "' + b"x" * (1100 * 1024) + b'"}]}', 413, "RIPPLE_MAX_REQUEST_KB"),
        ({"messages": [{"role": "user", "content": "hi"}] * 257}, 400, "RIPPLE_MAX_MESSAGES"),
        (chat(max_tokens=5000), 400, "max_tokens"),
        (chat(n=2), 400, "n must be 1"),
        (chat(logprobs=True), 400, "logprobs"),
        (chat(logit_bias={"42": 5}), 400, "logit_bias"),
        (chat(chat_template="{{ messages }}"), 400, "chat_template"),
        (chat(chat_template_kwargs={"enable_thinking": True}), 400, "chat_template_kwargs"),
        (chat(tools=[]), 400, "tools"),
        (b'{"messages": [', 400, "invalid request"),
    ]
    timings = []
    for body, status, words in cases:
        started = time.perf_counter()
        if isinstance(body, bytes):
            r = httpx.post(
                f"{server.base_url}/v1/chat/completions",
                content=body,
                headers={"content-type": "application/json"},
                timeout=30,
            )
        else:
            r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=30)
        timings.append(time.perf_counter() - started)
        assert r.status_code == status and words in r.json()["error"]["message"], (words, r.status_code, r.text)
    assert server.metric_total("vllm:prompt_tokens_total") == prompts, "a refused request reached the engine"
    assert server.metric_total("ripple_retrieval_seconds_count") == retrievals, "a refused request was retrieved for"
    print(f"refusals: slowest {max(timings) * 1000:.1f} ms, median {sorted(timings)[len(timings) // 2] * 1000:.1f} ms")

    # The prompt-token limit needs the retrieved sources to be counted, but still never reaches the engine.
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json=chat("hi " * 5000, max_tokens=1000), timeout=60)
    assert r.status_code == 400 and "prompt tokens" in r.json()["error"]["message"], r.text
    assert server.metric_total("vllm:prompt_tokens_total") == prompts


def test_a_deadline_gives_504_or_an_error_event_and_frees_the_engine(server: Server) -> None:
    exceeded = server.metric("ripple_deadline_exceeded_total")
    slow = chat(max_tokens=400, ignore_eos=True)
    r = httpx.post(
        f"{server.base_url}/v1/chat/completions", json=slow, headers={"X-Request-Timeout": "1.5"}, timeout=60
    )
    assert r.status_code == 504 and "deadline" in r.json()["error"]["message"], r.text
    with httpx.stream(
        "POST",
        f"{server.base_url}/v1/chat/completions",
        json={**slow, "stream": True},
        headers={"X-Request-Timeout": "1.5"},
        timeout=60,
    ) as s:
        events, done = parse_events(s.iter_lines())
    assert done and events[-1]["error"]["type"] == "timeout", events[-1:]
    assert server.metric("ripple_deadline_exceeded_total") - exceeded == 2
    wait_for(lambda: server.metric("ripple_engine_unfinished_requests") == 0, 2, "the engine freeing both requests")


def test_a_client_that_leaves_a_non_streamed_answer_stops_its_generation(server: Server) -> None:
    cancelled = server.metric("ripple_cancelled_total")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/chat/completions", json=chat(max_tokens=400, ignore_eos=True), timeout=1.5)
    took = wait_for(lambda: server.metric("ripple_engine_unfinished_requests") == 0, 2, "the engine aborting")
    wait_for(lambda: server.metric("ripple_cancelled_total") > cancelled, 2, "the cancellation being counted")
    print(f"engine freed {took:.2f} s after the client left")


def test_cut_streams_leave_the_engine_at_its_baseline(server: Server) -> None:
    """Streams cut right after their first token, in waves of 4 (the in-flight bound): the engine's
    running count is back to 0 within 2 s of the last cut."""
    for _ in range(5):
        with ExitStack() as stack:
            streams = [open_stream(stack, server, chat(**LONG)) for _ in range(4)]
            assert server.metric("ripple_engine_unfinished_requests") == 4, "the 4 streams are in the engine"
            del streams
    took = wait_for(lambda: server.metric("ripple_engine_unfinished_requests") == 0, 2, "the engine emptying")
    print(f"engine back to baseline {took:.2f} s after 20 cut streams")


@contextmanager
def front_server(tmp_path: Path, upstream: str, **settings: str) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """A second Ripple process that generates through `upstream` (OpenAI-compatible) instead of an
    engine of its own; the session's server, directly or through a fault-injecting proxy, is the
    upstream, so the session still has one engine."""
    env = ripple_env(tmp_path / "qdrant", RIPPLE_UPSTREAM_URLS=upstream, RIPPLE_MODEL="ripple", **settings)
    run_ripple("index", str(CORPUS), env=env)
    port, log = free_port(), tmp_path / "front.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([RIPPLE, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(f"{base}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 180, "the front server starting")
        yield base, proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def front(server: Server, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    with front_server(tmp_path, f"{server.base_url}/v1", RIPPLE_DRAIN_TIMEOUT_S="60") as running:
        yield running


class FaultyUpstream:
    """An HTTP proxy to the session's server that injects the faults a remote vLLM pool shows: a 503
    before the answer (`fail_first` times), a stream that breaks off or stalls after two frames."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.mode = "pass"
        self.fail_first = 0
        self.attempts = 0
        self.port = free_port()
        self._server: uvicorn.Server | None = None

    def app(self) -> Starlette:
        async def models(request: Request) -> Response:
            async with httpx.AsyncClient() as client:
                r = await client.get(f"{self.target}/v1/models")
            return Response(r.content, r.status_code, media_type="application/json")

        async def chat(request: Request) -> Response:
            self.attempts += 1
            if self.fail_first > 0:
                self.fail_first -= 1
                return JSONResponse({"error": {"message": "injected: overloaded", "code": 503}}, status_code=503)
            body = await request.body()
            client = httpx.AsyncClient(timeout=120)
            upstream = await client.send(
                client.build_request(
                    "POST",
                    f"{self.target}/v1/chat/completions",
                    content=body,
                    headers={"content-type": "application/json"},
                ),
                stream=True,
            )

            async def frames() -> AsyncIterator[bytes]:
                sent = 0
                try:
                    async for line in upstream.aiter_lines():
                        if line and sent == 2 and self.mode == "break":
                            raise ConnectionError("injected: the upstream broke off")
                        if line and sent == 2 and self.mode == "stall":
                            await asyncio.sleep(30)
                        yield (line + "\n").encode()
                        sent += bool(line)
                finally:
                    await upstream.aclose()
                    await client.aclose()

            return StreamingResponse(frames(), media_type="text/event-stream")

        return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])])

    def __enter__(self) -> FaultyUpstream:
        self._server = uvicorn.Server(uvicorn.Config(self.app(), port=self.port, log_level="warning"))
        threading.Thread(target=self._server.run, daemon=True).start()
        wait_for(lambda: self._server is not None and self._server.started, 10, "the proxy starting")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.should_exit = True


def test_upstream_faults_are_retried_only_before_the_stream_and_otherwise_reported(
    server: Server, tmp_path: Path
) -> None:
    with (
        FaultyUpstream(server.base_url) as proxy,
        front_server(
            tmp_path, f"http://127.0.0.1:{proxy.port}/v1", RIPPLE_UPSTREAM_TIMEOUT_S="3", RIPPLE_UPSTREAM_RETRIES="2"
        ) as (base, _, _),
    ):
        url = f"{base}/v1/chat/completions"
        # A 503 before the answer: retried (nothing was sent yet), and the client never sees it.
        proxy.attempts, proxy.fail_first = 0, 1
        r = httpx.post(url, json=chat(max_tokens=8), timeout=120)
        assert r.status_code == 200 and proxy.attempts == 2, (r.status_code, proxy.attempts, r.text)
        # Busy past the retries: a 429 with Retry-After, so the client backs off (vLLM's 503 means "try
        # later"), in words.
        proxy.attempts, proxy.fail_first = 0, 10
        r = httpx.post(url, json=chat(max_tokens=8), timeout=120)
        assert r.status_code == 429 and r.headers["retry-after"], r.text
        assert "upstream servers are busy" in r.json()["error"]["message"], r.text
        assert proxy.attempts == 3, "one try and two retries"
        proxy.fail_first = 0
        # Broken off or stalled after text went out: never retried (the client would see text twice).
        for mode in ("break", "stall"):
            proxy.attempts, proxy.mode = 0, mode
            started = time.monotonic()
            with httpx.stream("POST", url, json=chat(stream=True, max_tokens=64, ignore_eos=True), timeout=60) as s:
                events, done = parse_events(s.iter_lines())
            assert done and events[-1]["error"]["type"] == "upstream_error", (mode, events[-1:])
            assert proxy.attempts == 1, f"{mode}: retried after the stream started"
            print(f"{mode}: error event after {time.monotonic() - started:.1f} s")


def test_sigterm_drains_open_streams_refuses_new_requests_and_exits_0(
    front: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, proc, log = front
    body = chat(stream=True, max_tokens=48, ignore_eos=True)
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as s:
        lines = s.iter_lines()
        assert next(lines).startswith("data: ")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: httpx.get(f"{base}/ready", timeout=5).status_code == 503, 2, "/ready turning 503")
        refused = httpx.post(f"{base}/v1/chat/completions", json=chat(), timeout=30)
        assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
        assert "shutting down" in refused.json()["error"]["message"]
        events, done = parse_events(lines)
    assert done, "the open stream ran to its end"
    assert [e["choices"][0]["finish_reason"] for e in events if e.get("choices")][-1] == "length"
    assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert "drained" in log.read_text()


def test_sigterm_during_start_up_stops_the_engine_processes_and_exits_0(tmp_path: Path) -> None:
    # A second server with an engine of its own, stopped while that engine starts: with nothing to
    # drain it must not finish starting (tens of seconds) only to shut down, nor leave processes behind.
    env = ripple_env(tmp_path / "qdrant")
    run_ripple("index", str(CORPUS), env=env)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [RIPPLE, "serve", "--port", str(free_port())], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:

        def engine_starting() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            return any("EngineCore" in _command(p) for p in psutil.Process(proc.pid).children(recursive=True))

        wait_for(engine_starting, 300, "the engine core process starting")
        descendants = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "SIGTERM during start-up" in text, text[-3000:]
    assert "vLLM engine ready" not in text and "Application startup complete" not in text, "it finished starting"
    # The resource tracker leaves once every process holding its pipe has gone, after freeing what they
    # leaked: with the session's engine busy beside it, that took over 10 s once in CI.
    _, alive = psutil.wait_procs(descendants, timeout=30)
    running = [p for p in alive if _running(p)]  # an exited one waits for init to reap it, on init's schedule
    assert not running, f"left behind: {[(p.pid, _command(p)) for p in running]}; still up: {_ours()}"


def _command(proc: psutil.Process) -> str:
    """A child's name and command line; empty for one that exited meanwhile (a zombie until reaped, or
    gone), as start-up's short-lived helper processes do."""
    try:
        return " ".join([proc.name(), *proc.cmdline()])
    except psutil.Error:
        return ""


def _ours() -> list[tuple[int, str]]:
    """Every running process of this environment's Python but the test's own: what may hold a pipe open."""
    me = os.getpid()
    return [
        (p.pid, _command(p)) for p in psutil.process_iter() if p.pid != me and sys.prefix in _command(p) and _running(p)
    ]


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def engine_core(server: Server) -> psutil.Process:
    children = psutil.Process(server.process.pid).children(recursive=True)
    cores = [p for p in children if "EngineCore" in _command(p)]
    assert cores, f"no EngineCore process among {[p.name() for p in children]}"
    return cores[0]


@pytest.mark.kills_engine
def test_engine_death_fails_open_streams_in_words_and_turns_ready_503(server: Server) -> None:
    core = engine_core(server)
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=chat(**LONG), timeout=60) as s:
        lines = s.iter_lines()
        assert next(lines).startswith("data: ")
        killed = time.monotonic()
        os.kill(core.pid, signal.SIGKILL)
        events, done = parse_events(lines)  # must end, not hang (the client timeout would fail it)
    ended = time.monotonic() - killed
    assert done and events[-1]["error"]["code"] == 503, events[-1:]
    took = wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 503, 5, "/ready turning 503")
    assert httpx.get(f"{server.base_url}/ready").json()["engine"] is False
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json=chat(), timeout=30)
    assert r.status_code == 503 and r.headers["retry-after"], r.text
    print(f"stream ended {ended:.2f} s after the kill; /ready 503 after {took:.2f} s more")


def test_the_load_tool_measures_the_real_server(server: Server) -> None:
    from benchmarks.load import Load, run_load
    from benchmarks.prompts import as_messages

    prompts = as_messages([QUESTION, "What does the gardening guide say about pests?"])
    closed = asyncio.run(
        run_load(
            server.base_url, prompts, Load(concurrency=2), requests=4, max_tokens=8, extra_body={"ignore_eos": True}
        )
    )
    assert closed["status_counts"] == {"200": 4}
    assert closed["throughput"]["output_tokens"] == 32 and closed["throughput"]["output_token_count_source"] == "usage"
    assert closed["ttft_ms"]["n"] == 4 and 0 < closed["ttft_ms"]["p50"] < closed["e2e_ms"]["p50"]
    assert closed["tpot_ms"]["n"] == 4 and closed["itl_ms"]["n"] > 0
    opened = asyncio.run(run_load(server.base_url, prompts, Load(rate=4.0), requests=6, max_tokens=8))
    assert set(opened["status_counts"]) <= {"200", "429"} and opened["status_counts"].get("200", 0) >= 1

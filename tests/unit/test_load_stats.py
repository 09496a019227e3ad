"""The load tool's statistics, its SSE chunk handling, its prompts, and its client against an in-process fake server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from benchmarks.load import (
    Load,
    RequestRecord,
    aggregate,
    itls,
    parse_loads,
    percentile,
    poisson_arrivals,
    run_load,
    status_counts,
    summarize_ms,
    tpot,
    ttft,
)
from benchmarks.prompts import load_questions, random_prompts


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return "data: " + json.dumps(body)


def usage_chunk(completion: int, prompt: int = 10) -> str:
    body = {
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }
    return "data: " + json.dumps(body)


def fed(lines_at: list[tuple[str, float]], start: float = 0.0, end: float | None = None) -> RequestRecord:
    record = RequestRecord(start=start, status="200")
    for line, t in lines_at:
        record.feed(line, t)
    record.end = end if end is not None else lines_at[-1][1]
    return record


# --- percentiles and summaries ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0, 4.0], [5.0], [0.3, 9.1, 2.2, 7.7, 1.0, 4.4, 8.8], list(range(101))])
@pytest.mark.parametrize("q", [0, 50, 95, 99, 100])
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_is_in_milliseconds_and_empty_is_none() -> None:
    s = summarize_ms([0.1, 0.2, 0.3])
    assert s["n"] == 3 and s["mean"] == pytest.approx(200.0) and s["p50"] == pytest.approx(200.0)
    assert s["p99"] == pytest.approx(298.0)
    assert summarize_ms([]) == {"n": 0, "mean": None, "p50": None, "p95": None, "p99": None}


# --- SSE chunk handling -----------------------------------------------------------------------------------


def test_role_only_chunk_is_not_the_first_token() -> None:
    r = fed(
        [(chunk({"role": "assistant", "content": ""}), 0.1), (chunk({"content": "Hi"}), 0.4), ("data: [DONE]", 0.5)]
    )
    assert ttft(r) == pytest.approx(0.4)
    assert r.done and r.ok


def test_usage_comes_from_the_final_chunk_and_sets_tpot() -> None:
    r = fed(
        [
            (chunk({"role": "assistant", "content": "A"}), 1.0),
            (chunk({"content": " b c"}), 1.5),
            (chunk({}, finish="length"), 2.0),
            (usage_chunk(completion=5, prompt=42), 2.0),
            ("data: [DONE]", 2.0),
        ],
        end=2.2,
    )
    assert r.output_tokens == 5 and r.prompt_tokens == 42 and r.finish_reason == "length"
    assert tpot(r) == pytest.approx((2.2 - 1.0) / 4)  # (e2e - ttft) / (tokens - 1), not per chunk


def test_without_usage_content_chunks_are_counted() -> None:
    r = fed([(chunk({"content": "a"}), 0.2), (chunk({"content": "b"}), 0.3), (chunk({"content": "c"}), 0.6)])
    assert r.usage_tokens is None and r.output_tokens == 3
    assert tpot(r) == pytest.approx((0.6 - 0.2) / 2)


def test_itl_is_the_gaps_between_content_chunks() -> None:
    r = fed(
        [
            (chunk({"role": "assistant"}), 0.05),
            (chunk({"content": "a"}), 0.2),
            (": keep-alive comment", 0.25),
            ("", 0.25),
            (chunk({"content": "b"}), 0.3),
            (chunk({}, finish="stop"), 0.35),
            (chunk({"content": "c"}), 0.6),
        ]
    )
    assert itls(r) == pytest.approx([0.1, 0.3])


def test_error_event_marks_a_stream_error() -> None:
    r = fed([(chunk({"content": "a"}), 0.1), ('data: {"error": {"message": "engine died", "code": 500}}', 0.2)])
    assert r.status == "stream_error" and r.error == "engine died" and not r.ok


def test_single_token_has_no_tpot() -> None:
    assert tpot(fed([(chunk({"content": "a"}), 0.1), (usage_chunk(1), 0.1)])) is None


# --- aggregation ----------------------------------------------------------------------------------------


def test_status_counts_and_aggregate_use_only_successes_for_latency() -> None:
    good = fed([(chunk({"content": "a"}), 0.1), (chunk({"content": "b"}), 0.3), (usage_chunk(4), 0.3)], end=0.4)
    slow = fed([(chunk({"content": "a"}), 0.5), (usage_chunk(2), 0.9)], end=1.0)
    refused = RequestRecord(start=0.0, status="429", end=0.01)
    broken = RequestRecord(start=0.0, status="stream_error", end=9.0, chunk_times=[8.0])
    timed_out = RequestRecord(start=0.0, status="timeout", end=30.0)
    records = [good, slow, refused, broken, timed_out]
    assert status_counts(records) == {"200": 2, "429": 1, "stream_error": 1, "timeout": 1}
    report = aggregate(records, duration=2.0)
    assert report["ttft_ms"]["n"] == 2 and report["ttft_ms"]["mean"] == pytest.approx(300.0)
    assert report["e2e_ms"]["p50"] == pytest.approx(700.0)
    assert report["itl_ms"]["n"] == 1 and report["itl_ms"]["p50"] == pytest.approx(200.0)
    t = report["throughput"]
    assert t["output_tokens"] == 6 and t["output_tokens_per_s"] == pytest.approx(3.0)
    assert t["requests_per_s"] == pytest.approx(1.0) and t["completed"] == 2 and t["requests"] == 5
    assert t["output_token_count_source"] == "usage" and t["prompt_tokens_mean"] == 10


def test_token_count_source_says_when_chunks_were_counted() -> None:
    r = fed([(chunk({"content": "a"}), 0.1)])
    assert aggregate([r], 1.0)["throughput"]["output_token_count_source"] == "content_chunks"


# --- arrivals and prompts ---------------------------------------------------------------------------------


def test_poisson_arrivals_are_seeded_with_the_given_rate() -> None:
    a = poisson_arrivals(4000, rate=2.0, seed=7)
    assert a == poisson_arrivals(4000, rate=2.0, seed=7) and a != poisson_arrivals(4000, rate=2.0, seed=8)
    assert a[0] == 0.0 and all(x < y for x, y in zip(a, a[1:], strict=False))
    assert a[-1] / (len(a) - 1) == pytest.approx(0.5, rel=0.05)


SHAREGPT = [{"id": "1", "conversations": [{"from": "human", "value": "C?"}, {"from": "gpt", "value": "c"}]}]


@pytest.mark.parametrize(
    "name,content,expected",
    [
        (
            "q.jsonl",
            '{"question": "What is Ripple?"}\n\n{"text": "How fast?", "id": 2}\n',
            ["What is Ripple?", "How fast?"],
        ),
        ("q.txt", "One?\n\nTwo?\n", ["One?", "Two?"]),
        (
            "chat.jsonl",
            '{"prompt": "A?"}\n{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "B?"}]}\n',
            ["A?", "B?"],
        ),
        ("sharegpt.json", json.dumps(SHAREGPT, indent=2), ["C?"]),
        ("q.csv", 'Question,category\n"D, with a comma?",x\nE?,y\n', ["D, with a comma?", "E?"]),
        ("excel.csv", "\ufeffprompt\nG?\n", ["G?"]),  # spreadsheet programs start the file with a BOM
        (
            "parts.jsonl",
            json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "H?"}]}]}),
            ["H?"],
        ),
        ("llama.txt", "[INST] I? [/INST]\nJ?\n", ["[INST] I? [/INST]", "J?"]),
        ("rows.json", '{"text": "K?"}\n{"text": "L?"}\n', ["K?", "L?"]),  # JSONL named .json
        # Empty prompts are left out (they were sent), and a file's kind is not misread:
        ("strings.json", '["A?", "", "  "]', ["A?"]),
        ("empty.jsonl", '{"question": ""}\n{"question": "B?"}\n', ["B?"]),
        ("turn.json", json.dumps([{"conversations": [{"from": "human", "value": ""}]}, {"text": "C?"}]), ["C?"]),
        ("UPPER.CSV", 'Prompt,category\n"Hello, world?",x\n', ["Hello, world?"]),
        ("curly.txt", "{curly} braces in a prompt?\nD?\n", ["{curly} braces in a prompt?", "D?"]),
    ],
)
def test_questions_from_the_common_dataset_formats(
    tmp_path: Path, name: str, content: str, expected: list[str]
) -> None:
    dataset = tmp_path / name
    dataset.write_text(content, encoding="utf-8")
    assert load_questions(dataset) == expected


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("broken.jsonl", '{"text": "M?"}\n{"text": \n', "broken.jsonl:2: not a JSON object"),
        ("bad.jsonl", '{"body": "F?"}\n', "bad.jsonl:1: no prompt found"),
    ],
)
def test_a_dataset_row_that_cannot_be_read_is_named(tmp_path: Path, name: str, content: str, message: str) -> None:
    dataset = tmp_path / name
    dataset.write_text(content)
    with pytest.raises(SystemExit, match=message):
        load_questions(dataset)


def test_conversations_without_a_user_turn_are_left_out_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As in real ShareGPT files: an empty conversation, or one that starts with the model's turn, does not
    stop the load; a file where no conversation has a user turn still does, with a message."""
    rows = [
        {"id": "1", "conversations": []},
        {"id": "2", "conversations": [{"from": "gpt", "value": "hello"}]},
        {"id": "3", "conversations": [{"from": "human", "value": "N?"}, {"from": "gpt", "value": "n"}]},
    ]
    sharegpt = tmp_path / "sharegpt.json"
    sharegpt.write_text(json.dumps(rows))
    assert load_questions(sharegpt) == ["N?"]
    assert "left out 2 of 3 rows with no prompt (empty, or no user turn)" in capsys.readouterr().err
    sharegpt.write_text(json.dumps(rows[:2]))
    with pytest.raises(SystemExit, match="no prompts in it"):
        load_questions(sharegpt)


def test_load_levels_must_be_above_zero() -> None:
    for concurrency, rate in (("0", None), ("-2", None), (None, "0"), ("x", None)):
        with pytest.raises(SystemExit):
            parse_loads(concurrency, rate)
    assert parse_loads("1,4", None) == [Load(concurrency=1), Load(concurrency=4)]


def test_random_prompts_have_the_asked_length_and_are_seeded() -> None:
    prompts = random_prompts(3, 50, seed=1)
    assert [len(p.split()) for p in prompts] == [50, 50, 50] and len(set(prompts)) == 3
    assert prompts == random_prompts(3, 50, seed=1)


# --- the client against a fake OpenAI SSE server ----------------------------------------------------------


class FakeOpenAI:
    """A tiny OpenAI chat server: role-only chunk, words, finish, usage, [DONE]; every `refuse_every`-th is 429."""

    def __init__(self, words: int = 4, refuse_every: int = 0, break_every: int = 0) -> None:
        self.words, self.refuse_every, self.break_every = words, refuse_every, break_every
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0
        self.app = Starlette(
            routes=[Route("/v1/models", self.models), Route("/v1/chat/completions", self.chat, methods=["POST"])]
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.bodies.append(body)
        n = len(self.bodies)
        if self.refuse_every and n % self.refuse_every == 0:
            return JSONResponse({"error": {"message": "busy", "code": 429}}, status_code=429)
        broken = bool(self.break_every and n % self.break_every == 0)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

        async def events() -> Any:
            try:
                yield chunk({"role": "assistant", "content": ""}) + "\n\n"
                for i in range(self.words):
                    await asyncio.sleep(0.005)
                    yield chunk({"content": f"w{i} "}) + "\n\n"
                    if broken:
                        yield 'data: {"error": {"message": "boom", "code": 500}}\n\ndata: [DONE]\n\n'
                        return
                yield chunk({}, finish="length") + "\n\n"
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield usage_chunk(completion=self.words) + "\n\n"
                yield "data: [DONE]\n\n"
            finally:
                self.in_flight -= 1

        return StreamingResponse(events(), media_type="text/event-stream")


async def test_closed_loop_client_against_fake_server() -> None:
    fake = FakeOpenAI(words=5, refuse_every=4, break_every=7)
    report = await run_load(
        "http://fake",
        [[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]],
        Load(concurrency=3),
        requests=9,
        max_tokens=5,
        transport=httpx.ASGITransport(app=fake.app),
    )
    assert len(fake.bodies) == 9 and 1 <= fake.max_in_flight <= 3
    assert report["status_counts"] == {"200": 6, "429": 2, "stream_error": 1}
    assert report["model"] == "fake-model" and report["load"]["concurrency"] == 3
    first = fake.bodies[0]
    assert first["model"] == "fake-model" and first["stream"] is True and first["max_tokens"] == 5
    assert first["stream_options"] == {"include_usage": True}
    assert {b["messages"][0]["content"] for b in fake.bodies} == {"q1", "q2"}
    t = report["throughput"]
    assert t["completed"] == 6 and t["output_tokens"] == 30 and t["output_token_count_source"] == "usage"
    assert report["ttft_ms"]["n"] == 6 and report["tpot_ms"]["n"] == 6 and report["itl_ms"]["n"] == 6 * 4
    assert report["prompt_tokens_by_prompt"] == {"0": [10], "1": [10]}


async def test_open_loop_sends_every_request() -> None:
    fake = FakeOpenAI(words=2)
    report = await run_load(
        "http://fake",
        [[{"role": "user", "content": "q"}]],
        Load(rate=500.0),
        requests=6,
        max_tokens=2,
        model="m",
        transport=httpx.ASGITransport(app=fake.app),
    )
    load = report["load"]
    assert report["status_counts"] == {"200": 6}
    assert {k: load[k] for k in ("mode", "rate", "requests", "max_tokens", "warmup")} == {
        "mode": "open",
        "rate": 500.0,
        "requests": 6,
        "max_tokens": 2,
        "warmup": 0,
    }
    assert load["last_arrival_s"] == poisson_arrivals(6, 500.0, 0)[-1]
    assert load["offered_requests_per_s"] == pytest.approx(5 / load["last_arrival_s"])
    assert {b["model"] for b in fake.bodies} == {"m"}


async def test_connection_failure_is_counted() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    report = await run_load(
        "http://nowhere",
        [[{"role": "user", "content": "q"}]],
        Load(concurrency=2),
        requests=3,
        max_tokens=2,
        model="m",
        transport=httpx.MockTransport(refuse),
    )
    assert report["status_counts"] == {"connection_error": 3} and report["ttft_ms"]["n"] == 0


async def test_a_request_past_its_deadline_is_a_timeout() -> None:
    fake = FakeOpenAI(words=200)  # about 1 s of chunks
    report = await run_load(
        "http://fake",
        [[{"role": "user", "content": "q"}]],
        Load(concurrency=1),
        requests=1,
        max_tokens=200,
        model="m",
        timeout=0.1,
        transport=httpx.ASGITransport(app=fake.app),
    )
    assert report["status_counts"] == {"timeout": 1}


def test_an_old_vllm_error_object_in_the_stream_is_a_stream_error() -> None:
    old = fed([(chunk({"content": "a"}), 0.1), ('data: {"object": "error", "message": "engine died"}', 0.2)])
    assert old.status == "stream_error" and old.error == "engine died"


def test_reasoning_tokens_count_as_output_for_ttft() -> None:
    r = fed(
        [
            (chunk({"role": "assistant"}), 0.1),
            (chunk({"reasoning_content": "hmm"}), 0.3),
            (chunk({"content": "x"}), 0.5),
        ]
    )
    assert ttft(r) == pytest.approx(0.3) and len(r.chunk_times) == 2


class Scripted:
    """Serves one scripted SSE body per request, streamed (an httpx mock transport, so nothing buffers
    it); records the Authorization headers and prompts."""

    def __init__(self, body: str, linger: float = 0.0) -> None:
        self.body, self.linger = body, linger
        self.auth: list[str | None] = []
        self.prompts: list[str] = []
        self.transport = httpx.MockTransport(self.chat)

    async def chat(self, request: httpx.Request) -> httpx.Response:
        self.auth.append(request.headers.get("authorization"))
        self.prompts.append(json.loads(request.content)["messages"][0]["content"])

        async def events() -> Any:
            yield self.body.encode()
            await asyncio.sleep(self.linger)  # a proxy that keeps the connection open after [DONE]

        return httpx.Response(200, content=events(), headers={"content-type": "text/event-stream"})


async def run_scripted(server: Scripted, **kw: Any) -> dict[str, Any]:
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
    options: dict[str, Any] = {"requests": 2, "max_tokens": 2, "model": "m", **kw}
    return await run_load("http://fake", prompts, Load(concurrency=1), transport=server.transport, **options)


async def test_streams_that_end_badly_are_errors_with_their_reasons() -> None:
    for finish, expected in (("abort", "finish_reason abort"), (None, "finish_reason None")):
        body = chunk({"content": "a"}) + "\n\n" + chunk({}, finish=finish) + "\n\ndata: [DONE]\n\n"
        report = await run_scripted(Scripted(body))
        assert report["status_counts"] == {"stream_error": 2}, finish
        assert report["errors"] == [
            {"status": "stream_error", "error": f"the stream ended with {expected}", "count": 2}
        ]


async def test_reading_stops_at_done_and_the_api_key_is_sent() -> None:
    body = chunk({"content": "a"}) + "\n\n" + chunk({}, finish="stop") + "\n\ndata: [DONE]\n\n"
    server = Scripted(body, linger=1.0)
    report = await run_scripted(server, api_key="sk-test")
    assert report["status_counts"] == {"200": 2}
    assert report["e2e_ms"]["p99"] < 500, "waited for the connection to close after [DONE]"
    assert server.auth == ["Bearer sk-test", "Bearer sk-test"]


async def test_an_answer_with_unicode_line_separators_is_read_whole() -> None:
    """U+2028, U+2029 and U+0085 arrive unescaped inside the JSON (Ripple and vLLM send them so); SSE
    splits lines only at CR and LF, so they are text, not line breaks."""
    text = "one\u2028two\u2029three\x85four"
    raw = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}
    first = "data: " + json.dumps(raw, ensure_ascii=False)
    assert "\u2028" in first and len(first.splitlines()) == 4, "sent unescaped: str.splitlines would cut it"
    body = first + "\r\n\r\n" + chunk({}, finish="stop") + "\n\ndata: [DONE]\n\n"
    report = await run_scripted(Scripted(body))
    assert report["status_counts"] == {"200": 2}, report["errors"]


async def test_a_finished_answer_is_not_a_timeout_while_the_connection_lingers() -> None:
    body = chunk({"content": "a"}) + "\n\n" + chunk({}, finish="stop") + "\n\ndata: [DONE]\n\n"
    report = await run_scripted(Scripted(body, linger=1.0), timeout=0.2)
    assert report["status_counts"] == {"200": 2}, report["errors"]


async def test_warm_up_and_measured_requests_use_different_prompts() -> None:
    body = chunk({"content": "a"}) + "\n\n" + chunk({}, finish="stop") + "\n\ndata: [DONE]\n\n"
    server = Scripted(body)
    report = await run_scripted(server, warmup=1, first_prompt=1)
    assert server.prompts == ["q1", "q2", "q3"], "warm-up first, then the prompts after it"
    assert report["prompt_tokens_by_prompt"] == {}


def test_compare_gives_no_ratio_for_a_load_that_was_not_all_answered() -> None:
    """A side that refused most requests (429s) would look fast on the few it answered."""
    from benchmarks.compare import ratios

    def report(status: dict[str, int], tps: float, ttft: float) -> dict[str, Any]:
        return {
            "load": {"mode": "closed", "concurrency": 8},
            "status_counts": status,
            "errors": [],
            "throughput": {"output_tokens_per_s": tps, "prompt_tokens_mean": 100.0},
            "ttft_ms": {"p50": ttft},
            "retrieval_mean_ms": 10.0,
        }

    row = ratios(report({"200": 24}, 90.0, 130.0), report({"200": 24}, 100.0, 100.0))
    assert row["throughput_ratio"] == pytest.approx(0.9) and row["ttft_p50_added_beyond_retrieval_ms"] == 20.0
    with pytest.raises(SystemExit, match=r"Ripple at c=8: not every request was answered \({'200': 4, '429': 20}"):
        ratios(report({"200": 4, "429": 20}, 100.0, 30.0), report({"200": 24}, 100.0, 100.0))

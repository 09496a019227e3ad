"""Load tool: streamed chat requests against any OpenAI-compatible endpoint (Ripple or `vllm serve`).

Closed loop (`--concurrency N`: N workers, each sends its next request when its last one ends) or
open loop (`--rate R`: Poisson arrivals, exponential gaps from a seeded RNG). Several loads
(`--concurrency 1,2,4`) run in sequence, and `--png` plots their p50/p95 TTFT and end-to-end latency.
Run: `python -m benchmarks.load --base-url http://127.0.0.1:8000 --concurrency 1,4 --requests 20`.

Measures, per successful request: TTFT (to the first chunk whose `delta.content` is not empty, so
a role-only chunk does not count), ITL (gaps between content chunks; a chunk may carry several
tokens, as Ripple's output-rail windows do), TPOT ((e2e - TTFT) / (output tokens - 1)) and e2e.
Output tokens come from the final `usage` chunk (`stream_options.include_usage`); a server that sends
none is counted in content chunks, and the JSON says which. A reasoning model's `reasoning_content`
counts as output, as in vLLM's own benchmark, so TTFT and TPOT cover the same tokens. A 200 stream
counts as a success only if it ends with a finish reason other than `abort`/`error` and `[DONE]`.
Warm-up requests use prompts of their own, and each load level starts further into a dataset, so a
measured request does not meet a prefix cache warmed by an earlier one unless the dataset is too
small (the tool then says so). Prompts come from `benchmarks/prompts.py`; the statistics are pure
functions below.
Left out: retries (a 429 is counted, not retried), non-streamed requests, multi-choice (`n` > 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import machine, sse_lines
from benchmarks.prompts import Message, as_messages, load_questions, random_prompts

# --- one request, as seen on the wire ----------------------------------------------------------------


@dataclass
class RequestRecord:
    """What the client saw of one request; times are `time.perf_counter()` seconds."""

    start: float
    status: str = "pending"
    """HTTP status ("200", "429", ...), or "stream_error", "timeout", "connection_error"."""
    end: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    """When each chunk with non-empty content arrived."""
    usage_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    done: bool = False
    error: str | None = None
    prompt_index: int = 0

    def feed(self, line: str, now: float) -> None:
        """Take one SSE line of an HTTP 200 stream (OpenAI chat.completion.chunk framing)."""
        if not line.startswith("data:"):
            return  # blank separators, comments (": ping"), event names
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return
        event = json.loads(data)
        if "error" in event or event.get("object") == "error":  # the latter: vLLM before 0.10.1
            err = event.get("error", event)
            self.status = "stream_error"
            self.error = str(err.get("message", err) if isinstance(err, dict) else err)
            return
        usage = event.get("usage")
        if usage:
            self.usage_tokens = usage.get("completion_tokens")
            self.prompt_tokens = usage.get("prompt_tokens")
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"):
                self.chunk_times.append(now)
            self.finish_reason = choice.get("finish_reason") or self.finish_reason

    @property
    def ok(self) -> bool:
        return self.status == "200"

    @property
    def output_tokens(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else len(self.chunk_times)


# --- statistics (pure) ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile by linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, p50, p95, p99 in milliseconds, and the count; None where there are no values."""
    out: dict[str, float | int | None] = {"n": len(seconds)}
    ms = [s * 1000 for s in seconds]
    out["mean"] = sum(ms) / len(ms) if ms else None
    for q in (50, 95, 99):
        out[f"p{q}"] = percentile(ms, q) if ms else None
    return out


def ttft(r: RequestRecord) -> float | None:
    return r.chunk_times[0] - r.start if r.chunk_times else None


def e2e(r: RequestRecord) -> float:
    return r.end - r.start


def tpot(r: RequestRecord) -> float | None:
    first = ttft(r)
    n = r.output_tokens
    return (e2e(r) - first) / (n - 1) if first is not None and n > 1 else None


def itls(r: RequestRecord) -> list[float]:
    return [b - a for a, b in zip(r.chunk_times, r.chunk_times[1:], strict=False)]


def status_counts(records: Sequence[RequestRecord]) -> dict[str, int]:
    return dict(sorted(Counter(r.status for r in records).items()))


def error_counts(records: Sequence[RequestRecord], top: int = 5) -> list[dict[str, Any]]:
    """The most frequent failures, by status and message (the first 200 characters), most frequent first."""
    counts = Counter((r.status, (r.error or "")[:200]) for r in records if not r.ok)
    return [{"status": st, "error": err, "count": n} for (st, err), n in counts.most_common(top)]


def aggregate(records: Sequence[RequestRecord], duration: float) -> dict[str, Any]:
    """The report's measures over all requests; latencies only from successful ones."""
    ok = [r for r in records if r.ok]
    with_usage = sum(r.usage_tokens is not None for r in ok)
    source = "usage" if with_usage == len(ok) else "content_chunks" if with_usage == 0 else "mixed"
    tokens = sum(r.output_tokens for r in ok)
    prompt = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    return {
        "status_counts": status_counts(records),
        "errors": error_counts(records),
        "ttft_ms": summarize_ms([t for r in ok if (t := ttft(r)) is not None]),
        "tpot_ms": summarize_ms([t for r in ok if (t := tpot(r)) is not None]),
        "itl_ms": summarize_ms([g for r in ok for g in itls(r)]),
        "e2e_ms": summarize_ms([e2e(r) for r in ok]),
        "throughput": {
            "duration_s": duration,
            "requests": len(records),
            "completed": len(ok),
            "requests_per_s": len(ok) / duration if duration > 0 else None,
            "output_tokens": tokens,
            "output_tokens_per_s": tokens / duration if duration > 0 else None,
            "output_token_count_source": source,
            "prompt_tokens_mean": sum(prompt) / len(prompt) if prompt else None,
        },
    }


def poisson_arrivals(n: int, rate: float, seed: int) -> list[float]:
    """Send times (s after the start) of n requests arriving as a Poisson process of `rate` per second."""
    rng, t, out = random.Random(seed), 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


# --- the client ----------------------------------------------------------------------------------------


async def first_model(client: httpx.AsyncClient, base_url: str) -> str:
    try:
        r = await client.get(f"{base_url}/v1/models")
        r.raise_for_status()
        return str(r.json()["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        raise SystemExit(
            f"could not read the model from {base_url}/v1/models ({exc!r}): check --base-url and --api-key, "
            "or name the model with --model"
        ) from None


DRAIN_S = 0.5
"""How long a request may wait for its connection to close after [DONE]; not counted in its latency."""


async def send(
    client: httpx.AsyncClient, base_url: str, body: dict[str, Any], timeout: float, prompt_index: int = 0
) -> RequestRecord:
    record = RequestRecord(start=time.perf_counter(), prompt_index=prompt_index)
    try:
        async with asyncio.timeout(timeout) as deadline:
            async with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
                record.status = str(response.status_code)
                if response.status_code != 200:
                    record.error = (await response.aread()).decode(errors="replace")[:500]
                else:
                    lines = sse_lines(response)
                    async for line in lines:
                        record.feed(line, time.perf_counter())
                        if record.status == "stream_error":
                            break
                        if record.done:
                            record.end = time.perf_counter()
                            # The answer is complete: the deadline no longer applies. Read what follows
                            # [DONE] (normally nothing), so the connection goes back to the pool; a server
                            # or proxy that holds it open is not waited for.
                            deadline.reschedule(None)
                            with contextlib.suppress(TimeoutError, httpx.HTTPError):
                                async with asyncio.timeout(DRAIN_S):
                                    async for _ in lines:
                                        pass
                            break
                    if record.ok and not record.done:
                        record.status, record.error = "stream_error", "the stream ended without data: [DONE]"
                    elif record.ok and record.finish_reason in (None, "abort", "error"):
                        record.status = "stream_error"
                        record.error = f"the stream ended with finish_reason {record.finish_reason}"
    except (TimeoutError, httpx.TimeoutException):
        record.status, record.error = "timeout", f"no complete answer within {timeout:g} s"
    except httpx.TransportError as exc:
        record.status, record.error = "connection_error", repr(exc)
    except (json.JSONDecodeError, AttributeError, TypeError) as exc:
        record.status, record.error = "stream_error", f"a chunk is not chat.completion.chunk JSON: {exc!r}"
    record.end = record.end or time.perf_counter()
    return record


@dataclass(frozen=True)
class Load:
    """One load level: `concurrency` workers (closed loop) or `rate` arrivals per second (open loop)."""

    concurrency: int | None = None
    rate: float | None = None

    def describe(self) -> dict[str, Any]:
        if self.rate is not None:
            return {"mode": "open", "rate": self.rate}
        return {"mode": "closed", "concurrency": self.concurrency}

    @property
    def value(self) -> float:
        return float(self.rate if self.rate is not None else self.concurrency or 0)


async def run_load(
    base_url: str,
    prompts: Sequence[list[Message]],
    load: Load,
    *,
    requests: int,
    max_tokens: int,
    model: str | None = None,
    timeout: float = 300,
    seed: int = 0,
    warmup: int = 0,
    extra_body: dict[str, Any] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    api_key: str | None = None,
    first_prompt: int = 0,
) -> dict[str, Any]:
    """Send `requests` streamed requests at `load`; return the aggregate report. The warm-up requests
    take prompts `first_prompt`, `first_prompt + 1`, ..., the measured ones the prompts after them (in
    turn, wrapping around `prompts`)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(timeout), limits=limits, transport=transport, headers=headers
    ) as client:
        model = model or await first_model(client, base_url)

        def body(i: int) -> dict[str, Any]:
            return {
                "model": model,
                "messages": prompts[prompt(i)],
                "max_tokens": max_tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
                **(extra_body or {}),
            }

        def prompt(i: int) -> int:
            return (first_prompt + i) % len(prompts)

        for i in range(warmup):
            await send(client, base_url, body(i), timeout)
        records: list[RequestRecord] = []
        started = time.perf_counter()
        if load.rate is not None:
            arrivals = poisson_arrivals(requests, load.rate, seed)

            async def arrive(i: int) -> None:
                await asyncio.sleep(max(0.0, started + arrivals[i] - time.perf_counter()))
                records.append(await send(client, base_url, body(warmup + i), timeout, prompt(warmup + i)))

            await asyncio.gather(*(arrive(i) for i in range(requests)))
        else:
            next_index = iter(range(requests))

            async def worker() -> None:
                for i in next_index:  # shared iterator: each index is taken by exactly one worker
                    records.append(await send(client, base_url, body(warmup + i), timeout, prompt(warmup + i)))

            await asyncio.gather(*(worker() for _ in range(load.concurrency or 1)))
        duration = time.perf_counter() - started
    report = aggregate(records, duration)
    report["load"] = {**load.describe(), "requests": requests, "max_tokens": max_tokens, "warmup": warmup}
    if load.rate is not None and requests > 1:
        # The offered load as sent (a seeded draw of a few arrivals can differ from --rate), and when the
        # last one arrived: the duration also covers the requests still running after it.
        report["load"]["last_arrival_s"] = arrivals[-1]
        report["load"]["offered_requests_per_s"] = (requests - 1) / arrivals[-1] if arrivals[-1] > 0 else None
    report["model"] = model
    # Which prompt lengths the server reported for each prompt: a check that two servers saw the same prompts.
    by_prompt: dict[int, set[int]] = {}
    for r in records:
        if r.prompt_tokens is not None:
            by_prompt.setdefault(r.prompt_index, set()).add(r.prompt_tokens)
    report["prompt_tokens_by_prompt"] = {str(i): sorted(v) for i, v in sorted(by_prompt.items())}
    return report


# --- output ----------------------------------------------------------------------------------------------


def fmt(x: float | int | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_table(reports: Sequence[dict[str, Any]]) -> None:
    cols = "load ok/sent ttft_p50 ttft_p95 ttft_p99 tpot_p50 itl_p50 e2e_p50 e2e_p95 req/s tok/s".split()
    print(" ".join(f"{c:>9}" for c in cols), "(ms, except rates)")
    for r in reports:
        load, t = r["load"], r["throughput"]
        label = f"c={load['concurrency']}" if load["mode"] == "closed" else f"r={load['rate']:g}"
        row = [label, f"{t['completed']}/{t['requests']}"]
        row += [fmt(r["ttft_ms"][q]) for q in ("p50", "p95", "p99")]
        row += [fmt(r["tpot_ms"]["p50"], 1), fmt(r["itl_ms"]["p50"], 1)]
        row += [fmt(r["e2e_ms"][q]) for q in ("p50", "p95")]
        row += [fmt(t["requests_per_s"], 2), fmt(t["output_tokens_per_s"], 1)]
        print(" ".join(f"{c:>9}" for c in row))
        if set(r["status_counts"]) != {"200"}:
            print(f"{'':>9} status counts: {r['status_counts']}")
            for e in r.get("errors", []):
                print(f"{'':>9} {e['count']} x {e['status']}: {e['error'] or '(no message)'}")
        if t["output_token_count_source"] != "usage":
            print(
                f"{'':>9} tok/s and TPOT counted in content chunks ({t['output_token_count_source']}): "
                "the server sent no usage for some answers"
            )
        if load.get("offered_requests_per_s") is not None:
            print(
                f"{'':>9} offered {load['offered_requests_per_s']:.2f} req/s (last arrival at "
                f"{load['last_arrival_s']:.1f} s); req/s above counts until the last answer, "
                f"{t['duration_s']:.1f} s"
            )


def plot(reports: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    closed = reports[0]["load"]["mode"] == "closed"
    xs = [r["load"]["concurrency"] if closed else r["load"]["rate"] for r in reports]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, name in ((axes[0], "ttft_ms", "TTFT"), (axes[1], "e2e_ms", "end-to-end")):
        for q, style in (("p50", "o-"), ("p95", "s--")):
            ys = [r[key][q] if r[key][q] is not None else float("nan") for r in reports]
            ax.plot(xs, ys, style, label=f"{name} {q}")
        # Latencies are of the answered requests only: each level says how many those were, in red
        # where some failed (a server refusing most requests would otherwise look fast).
        for x, r in zip(xs, reports, strict=True):
            t = r["throughput"]
            failed = t["completed"] < t["requests"]
            ax.annotate(
                f"{t['completed']}/{t['requests']} ok",
                (x, 0),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color="red" if failed else "gray",
            )
        ax.set_xlabel("concurrency (closed loop)" if closed else "arrival rate, requests/s (open loop)")
        ax.set_ylabel("ms")
        ax.set_xticks(xs)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_loads(concurrency: str | None, rate: str | None) -> list[Load]:
    if (concurrency is None) == (rate is None):
        raise SystemExit("give exactly one of --concurrency N[,N...] or --rate R[,R...]")
    try:
        if concurrency is not None:
            loads = [Load(concurrency=int(c)) for c in concurrency.split(",")]
        else:
            loads = [Load(rate=float(r)) for r in (rate or "").split(",")]
    except ValueError as exc:
        raise SystemExit(f"--concurrency takes whole numbers, --rate numbers, comma-separated: {exc}") from None
    if any(load.value <= 0 or not math.isfinite(load.value) for load in loads):
        raise SystemExit("--concurrency and --rate values must be above 0")
    return loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="server root, without /v1")
    parser.add_argument("--model", help="default: the first id from GET /v1/models")
    parser.add_argument(
        "--api-key", default=os.environ.get("OPENAI_API_KEY"), help="sent as a Bearer token (default: $OPENAI_API_KEY)"
    )
    parser.add_argument("--concurrency", help="closed loop: workers, or a list such as 1,2,4")
    parser.add_argument("--rate", help="open loop: Poisson arrivals per second, or a list such as 0.5,1,2")
    parser.add_argument("--requests", type=int, default=20, help="requests per load level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--dataset",
        type=Path,
        help="JSONL, JSON array or CSV with a header (field question, text, prompt..., or messages), "
        "or one question per line",
    )
    parser.add_argument("--prompt-tokens", type=int, default=32, help="random prompts of about this many tokens")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--ignore-eos", action="store_true", help="vLLM extra: always generate max_tokens")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured requests before each load level")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for one whole request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json",
        type=Path,
        help="write the report here: one level's keys at the top (load, model, status_counts, errors, ttft_ms, "
        "tpot_ms, itl_ms, e2e_ms as mean/p50/p95/p99, throughput, prompt_tokens_by_prompt, machine), and "
        "every level's in `runs`, also when there is one",
    )
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    loads = parse_loads(args.concurrency, args.rate)
    if args.requests < 1 or args.warmup < 0 or args.max_tokens < 1 or args.prompt_tokens < 1:
        parser.error("--requests, --max-tokens and --prompt-tokens must be at least 1, --warmup at least 0")
    if not 0 < args.timeout < math.inf:
        parser.error(f"--timeout must be a number of seconds above 0, not {args.timeout}")
    if not args.base_url.startswith(("http://", "https://")):
        parser.error(f"--base-url {args.base_url!r}: give the scheme too, e.g. http://{args.base_url}")
    base = args.base_url.rstrip("/").removesuffix("/v1")
    dataset = load_questions(args.dataset) if args.dataset else None
    per_level = args.requests + args.warmup
    if dataset is not None and len(dataset) < per_level * len(loads):
        print(
            f"warning: {args.dataset} has {len(dataset)} prompts and this run sends {per_level * len(loads)}: "
            "prompts repeat, and a server's prefix cache can make the repeats' TTFT look better than it is"
        )
    extra: dict[str, Any] = {"temperature": args.temperature}
    if args.ignore_eos:
        extra["ignore_eos"] = True
    reports = []
    for level, load in enumerate(loads):
        # Fresh random prompts per level, so a level never hits the prefix cache warmed by the one before.
        questions = dataset or random_prompts(per_level, args.prompt_tokens, args.seed + level)
        reports.append(
            asyncio.run(
                run_load(
                    base,
                    as_messages(questions),
                    load,
                    requests=args.requests,
                    max_tokens=args.max_tokens,
                    model=args.model,
                    timeout=args.timeout,
                    seed=args.seed,
                    warmup=args.warmup,
                    extra_body=extra,
                    api_key=args.api_key,
                    # Each level further into the dataset, so it does not repeat the prompts just sent.
                    first_prompt=level * per_level if dataset else 0,
                )
            )
        )
    print_table(reports)
    host = machine()
    prompts = str(args.dataset) if args.dataset else f"random, about {args.prompt_tokens} tokens"
    for r in reports:
        r["load"].update(base_url=base, prompts=prompts, temperature=args.temperature, ignore_eos=args.ignore_eos)
        r["machine"] = host  # the load client's; the server's only when both run on one machine
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        top = reports[0] if len(reports) == 1 else {"machine": host, "model": reports[0]["model"]}
        out = {**top, "runs": reports}
        out["settings"] = {"seed": args.seed, "timeout_s": args.timeout, "warmup": args.warmup}
        args.json.write_text(json.dumps(out, indent=2))
    if args.png:
        title = (
            f"{reports[0]['model']} at {base} | client: {host['cpu']}, {host['cores']} cores | "
            f"{args.requests} requests/level, max_tokens {args.max_tokens}, prompts: {prompts}"
        )
        plot(reports, args.png, title)


if __name__ == "__main__":
    main()

"""Ripple against a raw vLLM OpenAI server on the same model and the same augmented prompts, in one run.

1. Index docs/ into a temporary Qdrant folder and start `ripple serve` (harness.ripple_server).
2. For each question, fetch Ripple's passages (POST /v1/retrieve, Ripple's own top_k and mode; or
   the `citations` of a 1-token chat answer where those differ) and build the messages Ripple sends
   its engine with `runtime.prompt.assemble`, the function Ripple itself calls, so the raw server
   sees the same prompt (checked per question: both servers report `usage.prompt_tokens`).
3. Run the load (benchmarks.load, closed loop) at each concurrency against Ripple with the bare
   questions; read its retrieval time from /metrics; stop it.
4. Start `python -m vllm.entrypoints.openai.api_server` on Ripple's model folder with Ripple's
   dtype, max_model_len, enforce_eager and KV cache (VLLM_CPU_KVCACHE_SPACE), and run the same load
   with the augmented messages. The two servers never run at once: they would share the cores.
5. Print Ripple/raw output-token throughput and the TTFT p50 difference (also net of retrieval).
With `--rails both`, Ripple runs twice, rails on and off (one server after the other), and the
rails' own cost is printed too: TTFT and TPOT p50 with rails on minus off, and the throughput ratio.
Greedy decoding with `ignore_eos`, so both generate exactly `--max-tokens` tokens per answer.
Run: `python -m benchmarks.compare --concurrency 1,8 --requests 24 [--rails on|off|both] --json out.json`.

Importing `runtime.prompt`/`runtime.settings`/`runtime.models` here breaks the rule that benchmarks
only see Ripple over HTTP, on purpose: a copy of the prompt packing could drift from the real one.
Left out: Ripple's token-budget dropping of sources (the default budget fits top_k passages; a
mismatch shows as different `prompt_tokens`), an upstream-pool Ripple, and open-loop loads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.first_token import histogram_sums
from benchmarks.harness import RIPPLE, Served, free_port, machine, ripple_server, served_process
from benchmarks.load import Load, Message, as_messages, fmt, load_questions, run_load
from indexer.types import Passage
from runtime.models import resolve_chat_model
from runtime.prompt import assemble
from runtime.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
QUESTIONS = [
    "How do I point Ripple at a Qdrant server instead of a local folder?",
    "What does dropped_sources mean in a chat response?",
    "Which setting limits the number of concurrent chat requests?",
    "How are output rails applied to a streamed answer?",
    "What file formats can ripple index read?",
    "What happens when a client disconnects during a stream?",
    "How do I choose sparse retrieval for one request?",
    "What does GET /ready report?",
]


@contextmanager
def vllm_server(settings: Settings, log: Path, timeout: float = 600) -> Iterator[Served]:
    """A raw vLLM OpenAI server configured like Ripple's in-process engine, until the block ends."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", resolve_chat_model(settings.model, settings.cache_dir),
        "--dtype", settings.resolved_dtype(),
        "--max-model-len", str(settings.max_model_len),
        "--generation-config", "vllm",  # vLLM's sampling defaults, as Ripple's SamplingParams use
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    if settings.enforce_eager:
        cmd.append("--enforce-eager")
    # Ripple's engine uses VLLM_CPU_KVCACHE_SPACE when set, else RIPPLE_KV_CACHE_GB: the same here.
    kv = os.environ.get("VLLM_CPU_KVCACHE_SPACE") or f"{settings.kv_cache_gb:g}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": kv}
    with served_process(cmd, env, port, "/health", log, timeout) as served:
        yield served


def augmented(base_url: str, settings: Settings, questions: list[str]) -> tuple[list[list[Message]], int]:
    """The messages Ripple's engine sees for each question: its instructions, sources, then the question.

    The passages are those of POST /v1/retrieve, unless Ripple's chat packed others (its `citations`
    are exactly the passages in its prompt): hybrid search breaks ties in no fixed order, and Ripple
    drops sources that do not fit. Returns the messages and how many questions took the citations.
    """
    out, differed = [], 0
    fields = ("chunk_id", "doc_id", "source", "text", "score", "start", "end", "heading")
    for q in questions:
        r = httpx.post(f"{base_url}/v1/retrieve", json={"query": q, "top_k": settings.top_k}, timeout=60)
        r.raise_for_status()
        retrieved = r.json()["data"]
        body = {"messages": [{"role": "user", "content": q}], "max_tokens": 1}
        chat = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=300)
        chat.raise_for_status()
        cited = chat.json()["citations"]
        if [p["chunk_id"] for p in cited] != [p["chunk_id"] for p in retrieved]:
            differed += 1
        passages = [Passage(**{k: item[k] for k in fields}) for item in cited]
        out.append(assemble(settings.system_prompt, [{"role": "user", "content": q}], passages))
    return out, differed


def retrieval_mean_ms(before: dict[str, float], after: dict[str, float]) -> float | None:
    name = "ripple_retrieval_seconds"
    count = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
    return 1000 * (after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)) / count if count else None


def run_loads(
    base_url: str, prompts: list[list[Message]], args: argparse.Namespace, ripple: bool
) -> list[dict[str, Any]]:
    reports = []
    for c in args.concurrency:
        before = histogram_sums(base_url) if ripple else {}
        report = asyncio.run(
            run_load(
                base_url,
                prompts,
                Load(concurrency=c),
                requests=args.requests,
                max_tokens=args.max_tokens,
                warmup=args.warmup,
                timeout=args.timeout,
                extra_body={"temperature": 0.0, "ignore_eos": True},
            )
        )
        if ripple:
            report["retrieval_mean_ms"] = retrieval_mean_ms(before, histogram_sums(base_url))
        reports.append(report)
    return reports


def ratios(ripple: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    rip_tps, raw_tps = ripple["throughput"]["output_tokens_per_s"], raw["throughput"]["output_tokens_per_s"]
    rip_ttft, raw_ttft = ripple["ttft_ms"]["p50"], raw["ttft_ms"]["p50"]
    added = rip_ttft - raw_ttft if rip_ttft is not None and raw_ttft is not None else None
    retrieval = ripple.get("retrieval_mean_ms")
    net = added - retrieval if added is not None and retrieval is not None else None
    return {
        "concurrency": ripple["load"]["concurrency"],
        "throughput_ratio": rip_tps / raw_tps if rip_tps and raw_tps else None,
        "ttft_p50_added_ms": added,
        "ttft_p50_added_beyond_retrieval_ms": net,
        "ripple_prompt_tokens_mean": ripple["throughput"]["prompt_tokens_mean"],
        "raw_prompt_tokens_mean": raw["throughput"]["prompt_tokens_mean"],
    }


def rails_costs(on: list[dict[str, Any]], off: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def delta(a: float | None, b: float | None) -> float | None:
        return a - b if a is not None and b is not None else None

    return [
        {
            "concurrency": a["load"]["concurrency"],
            "ttft_p50_added_ms": delta(a["ttft_ms"]["p50"], b["ttft_ms"]["p50"]),
            "tpot_p50_added_ms": delta(a["tpot_ms"]["p50"], b["tpot_ms"]["p50"]),
            "throughput_ratio": (
                a["throughput"]["output_tokens_per_s"] / b["throughput"]["output_tokens_per_s"]
                if a["throughput"]["output_tokens_per_s"] and b["throughput"]["output_tokens_per_s"]
                else None
            ),
        }
        for a, b in zip(on, off, strict=True)
    ]


def print_table(rows: list[dict[str, Any]], ripple: list[dict[str, Any]], raw: list[dict[str, Any]]) -> None:
    head = "conc tok/s_ripple tok/s_raw ratio ttft50_ripple ttft50_raw added_ms retrieval_ms net_ms prompt_tok"
    print(" ".join(f"{c:>13}" for c in head.split()), " status ripple / raw")
    for row, a, b in zip(rows, ripple, raw, strict=True):
        cells = [
            str(row["concurrency"]),
            fmt(a["throughput"]["output_tokens_per_s"], 1),
            fmt(b["throughput"]["output_tokens_per_s"], 1),
            fmt(row["throughput_ratio"], 3),
            fmt(a["ttft_ms"]["p50"]),
            fmt(b["ttft_ms"]["p50"]),
            fmt(row["ttft_p50_added_ms"]),
            fmt(a.get("retrieval_mean_ms"), 1),
            fmt(row["ttft_p50_added_beyond_retrieval_ms"]),
            f"{fmt(row['ripple_prompt_tokens_mean'])}/{fmt(row['raw_prompt_tokens_mean'])}",
        ]
        print(" ".join(f"{c:>13}" for c in cells), f" {a['status_counts']} / {b['status_counts']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8", help="closed-loop levels, comma-separated")
    parser.add_argument("--requests", type=int, default=24, help="requests per level and server")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--dataset", type=Path, help="questions (JSONL or one per line); default: 8 about docs/")
    parser.add_argument("--rails", choices=["on", "off", "both"], default="on", help="Ripple's rails")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--log-dir", type=Path, help="server logs; default: a new folder under /tmp, kept")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    questions = load_questions(args.dataset) if args.dataset else QUESTIONS
    logs = args.log_dir or Path(tempfile.mkdtemp(prefix="ripple-compare-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"server logs: {logs}")
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.rails]
    runs: dict[bool, list[dict[str, Any]]] = {}
    ripple_start: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"RIPPLE_QDRANT_PATH": f"{tmp}/qdrant"}
        # The settings `ripple serve` reads from the same environment (RIPPLE_* variables, RIPPLE_CONFIG).
        overrides: dict[str, Any] = {"qdrant_path": Path(env["RIPPLE_QDRANT_PATH"])}
        settings = Settings(**overrides)
        subprocess.run([RIPPLE, "index", str(DOCS)], env={**os.environ, **env}, check=True, capture_output=True)
        prompts: list[list[Message]] = []
        differed = 0
        for rails in modes:
            name = "on" if rails else "off"
            with ripple_server({**env, "RIPPLE_GUARDS_ENABLED": str(rails).lower()}, logs / f"ripple-{name}.log") as s:
                if not prompts:
                    prompts, differed = augmented(s.base_url, settings, questions)
                runs[rails] = run_loads(s.base_url, as_messages(questions), args, ripple=True)
                ripple_start[name] = s.start_seconds
        with vllm_server(settings, logs / "vllm.log") as served:
            raw = run_loads(served.base_url, prompts, args, ripple=False)
            raw_start = served.start_seconds
    ripple = runs[modes[0]]
    all_rows = {}
    for rails, reports in runs.items():
        all_rows["on" if rails else "off"] = rows = [ratios(a, b) for a, b in zip(reports, raw, strict=True)]
        print(f"Ripple with rails {'on' if rails else 'off'} against raw vLLM:")
        print_table(rows, reports, raw)
    rails_cost = rails_costs(runs[True], runs[False]) if len(runs) == 2 else None
    if rails_cost:
        print("Rails' own cost (rails on minus off, same Ripple, same prompts):")
        for row in rails_cost:
            print(
                f"  c={row['concurrency']}: TTFT p50 {fmt(row['ttft_p50_added_ms'])} ms, "
                f"TPOT p50 {fmt(row['tpot_p50_added_ms'], 1)} ms, throughput ratio {fmt(row['throughput_ratio'], 3)}"
            )
    mismatched = sorted(
        {q for a, b in zip(ripple, raw, strict=True) for q, n in a["prompt_tokens_by_prompt"].items()
         if n != b["prompt_tokens_by_prompt"].get(q)}
    )  # fmt: skip
    print(f"questions whose /v1/retrieve passages differed from Ripple's citations (citations used): {differed}")
    if mismatched:
        print(f"warning: prompts {mismatched} had other lengths on the two servers (not like for like)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": machine(),
            "model": resolve_chat_model(settings.model, settings.cache_dir),
            "engine": {
                "dtype": settings.resolved_dtype(),
                "max_model_len": settings.max_model_len,
                "kv_cache_gb": os.environ.get("VLLM_CPU_KVCACHE_SPACE") or settings.kv_cache_gb,
                "enforce_eager": settings.enforce_eager,
            },
            "load": {
                "mode": "closed",
                "concurrency": args.concurrency,
                "requests": args.requests,
                "max_tokens": args.max_tokens,
                "ignore_eos": True,
                "temperature": 0.0,
                "questions": len(questions),
                "rails": args.rails,
            },
            "start_s": {"ripple": ripple_start, "raw_vllm": raw_start},
            "ratios": all_rows[args.rails if args.rails != "both" else "on"],
            "ratios_by_rails": all_rows,
            "rails_cost": rails_cost,
            "ripple_rails_off": runs.get(False),
            "retrieve_differed_from_citations": differed,
            "prompt_length_mismatches": mismatched,
            "ripple": ripple,
            "raw_vllm": raw,
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

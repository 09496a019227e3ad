"""Ripple against a raw vLLM OpenAI server on the same model and the same augmented prompts, in one run.

1. Index docs/ into a temporary Qdrant folder and start `ripple serve` (harness.ripple_servers).
2. For each question, fetch Ripple's passages (POST /v1/retrieve, Ripple's own top_k and mode; or
   the `citations` of a 1-token chat answer where those differ) and build the messages Ripple sends
   its engine with `runtime.prompt.assemble`, the function Ripple itself calls, so the raw server
   sees the same prompt (checked per question: both servers report `usage.prompt_tokens`).
3. Start `python -m vllm.entrypoints.openai.api_server` on Ripple's model folder with Ripple's
   dtype, max_model_len, enforce_eager and KV cache (VLLM_CPU_KVCACHE_SPACE).
4. In each of `--rounds` rounds, run the load (benchmarks.load, closed loop) at each concurrency
   against every server in turn, the order rotated each round: Ripple with the bare questions (its
   retrieval time read from /metrics), raw vLLM with the augmented messages. Only one server is
   under load at a time; the others sit idle (an idle vLLM engine waits on its socket). Rounds
   interleave the servers because this machine drifts by 15-20% within minutes: one server after
   the other measured the drift as much as the servers.
5. Print, per round and as the median over rounds, Ripple/raw output-token throughput and the TTFT
   p50 difference (also net of retrieval); per round, each server's CPU time per answered request,
   its API process apart from its engine processes (psutil), which shows Ripple's own work.
With `--rails both`, two Ripple servers run, rails on and off, and the rails' own cost is printed
too: TTFT and TPOT p50 with rails on minus off, and the throughput ratio.
Greedy decoding with `ignore_eos`, so both generate exactly `--max-tokens` tokens per answer.
Run: `python -m benchmarks.compare --concurrency 1,8 --requests 24 [--rounds N] [--rails on|off|both]
[--start-order raw,off,on] [--both-orders] --json out.json` (rounds: one per server by default, so that
each goes first once). With several servers up at once, the one started first was slower on these
machines (two identical Ripple servers: 0.76 against 0.54 s TTFT p50; raw vLLM started first fell
behind Ripple; two bare embedding processes show it too, see benchmarks/start_order.py), so a fair
comparison runs twice with the start order reversed:
`--both-orders` does that in one command and prints the mean of the two orders (throughput ratios by
geometric mean, milliseconds by arithmetic mean) beside each order's medians.

Importing `runtime.prompt`/`runtime.settings`/`runtime.models` here breaks the rule that benchmarks
only see Ripple over HTTP, on purpose: a copy of the prompt packing could drift from the real one.
Left out: Ripple's token-budget dropping of sources (the default budget fits top_k passages; a
mismatch shows as different `prompt_tokens`), an upstream-pool Ripple, and open-loop loads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import (
    RIPPLE,
    Served,
    cpu_seconds,
    free_port,
    histogram_count,
    histogram_mean,
    histogram_sums,
    machine,
    ripple_servers,
    served_process,
)
from benchmarks.load import Load, fmt, parse_loads, run_load
from benchmarks.prompts import Message, as_messages, load_questions
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
    # ... and its worker's cores as Ripple's engine binds them (RIPPLE_ENGINE_CPU_RESERVED_CORES).
    if (reserved := settings.engine_cpu_reserved()) is not None:
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", str(reserved))
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


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def run_loads(
    served: Served, prompts: list[list[Message]], args: argparse.Namespace, ripple: bool
) -> list[dict[str, Any]]:
    base_url = served.base_url
    reports = []
    for c in args.concurrency:
        before = histogram_sums(base_url) if ripple else {}
        cpu_before = cpu_seconds(served.pid)
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
        # CPU per answered request (warm-up included in both), the API process apart from the engine's:
        # Ripple's own work beyond raw vLLM's shows in the first.
        api, engine = (b - a for a, b in zip(cpu_before, cpu_seconds(served.pid), strict=True))
        answered = report["status_counts"].get("200", 0) + args.warmup
        report["cpu_ms_per_request"] = {
            "api_process": ms(api / answered) if answered else None,
            "engine_processes": ms(engine / answered) if answered else None,
        }
        if ripple:
            after = histogram_sums(base_url)
            report["retrieval_mean_ms"] = ms(histogram_mean("ripple_retrieval_seconds", before, after))
            # Each rail's mean check time, and output checks per request (one per streamed window).
            rails = {rail: f'ripple_rails_seconds{{rail="{rail}"}}' for rail in ("input", "retrieval", "output")}
            report["rails_mean_ms"] = {rail: ms(histogram_mean(name, before, after)) for rail, name in rails.items()}
            answered = histogram_count(rails["input"], before, after)
            report["output_checks_per_request"] = (
                histogram_count(rails["output"], before, after) / answered if answered else None
            )
        reports.append(report)
    return reports


def ratios(ripple: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    # Latency and throughput count answered requests only: a side that refused or lost some would compare
    # a lighter load with a full one. As in ab_load, the run stops and says what failed.
    for name, report in (("Ripple", ripple), ("raw vLLM", raw)):
        if set(report["status_counts"]) != {"200"}:
            raise SystemExit(
                f"{name} at c={report['load']['concurrency']}: not every request was answered "
                f"({report['status_counts']}; {report['errors']}); its ratios would compare different loads"
            )
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
        cpu = [
            f"{name} {fmt(r['cpu_ms_per_request'].get('api_process'), 1)} / "
            f"{fmt(r['cpu_ms_per_request'].get('engine_processes'), 1)}"
            for name, r in (("ripple", a), ("raw", b))
            if "cpu_ms_per_request" in r
        ]
        print(f"{'':>13} CPU ms per request, API process / engine processes: {', '.join(cpu)}")
        if any(a.get("rails_mean_ms", {}).values()):
            rails = ", ".join(f"{k} {fmt(v, 1)}" for k, v in a["rails_mean_ms"].items())
            print(f"{'':>13} rails' mean ms per check: {rails}; output checks per request "
                  f"{fmt(a['output_checks_per_request'], 1)}")  # fmt: skip


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over rounds (one concurrency), with its range."""
    out: dict[str, Any] = {"concurrency": rows[0]["concurrency"]}
    keys = dict.fromkeys(k for r in rows for k, v in r.items() if k != "concurrency" and isinstance(v, int | float))
    for key in keys:
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        out[key] = statistics.median(values)
        out[f"{key}_range"] = [min(values), max(values)]
    return out


def summarise(per_round: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rounds × concurrencies of rows -> one median row per concurrency."""
    return [median_row([rows[i] for rows in per_round]) for i in range(len(per_round[0]))]


def print_medians(title: str, rows: list[dict[str, Any]], keys: list[str]) -> None:
    print(title)
    for row in rows:
        cells = [f"{k} {fmt(row[k], 3)} [{fmt(row[k + '_range'][0], 3)}, {fmt(row[k + '_range'][1], 3)}]"
                 for k in keys if row.get(k) is not None]  # fmt: skip
        print(f"  c={row['concurrency']}: " + "; ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8", help="closed-loop levels, comma-separated")
    parser.add_argument("--requests", type=int, default=24, help="requests per level, server and round")
    parser.add_argument(
        "--rounds", type=int, help="rounds over all servers, order rotated each round; default: one per server"
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--dataset", type=Path, help="questions (JSONL or one per line); default: 8 about docs/")
    parser.add_argument("--rails", choices=["on", "off", "both"], default="on", help="Ripple's rails")
    parser.add_argument(
        "--start-order",
        help="the order the servers start in, e.g. raw,off,on (default: on,off,raw); with several up at once "
        "the one started first ran slower here, so run twice with the order swapped",
    )
    parser.add_argument(
        "--both-orders",
        action="store_true",
        help="run everything twice, the second time with the start order reversed, and print the mean of the two",
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--log-dir", type=Path, help="server logs; default: a new folder under /tmp, kept")
    args = parser.parse_args()
    args.concurrency = [load.concurrency for load in parse_loads(args.concurrency, None)]
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    questions = load_questions(args.dataset) if args.dataset else QUESTIONS
    logs = args.log_dir or Path(tempfile.mkdtemp(prefix="ripple-compare-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"server logs: {logs}")
    names = {"on": ["on"], "off": ["off"], "both": ["on", "off"]}[args.rails]
    args.rounds = args.rounds or len(names) + 1  # each server goes first once
    start_order = args.start_order.split(",") if args.start_order else [*names, "raw"]
    if sorted(start_order) != sorted([*names, "raw"]):
        parser.error(f"--start-order must name each server once: {','.join([*names, 'raw'])} in some order")
    orders = [start_order, start_order[::-1]] if args.both_orders else [start_order]
    reports = []
    for order in orders:
        print(f"servers started in the order {','.join(order)}", flush=True)
        folder = logs / ("-".join(order)) if len(orders) > 1 else logs
        folder.mkdir(parents=True, exist_ok=True)
        reports.append(run_order(args, names, order, questions, folder))
    report: dict[str, Any] = (
        reports[0] if len(reports) == 1 else {"orders": reports, "mean_of_orders": mean_of_orders(reports, names)}
    )
    if len(reports) > 1:
        print_mean_of_orders(report["mean_of_orders"], [r["start_order"] for r in reports])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


RATIO_KEYS = ["throughput_ratio", "ttft_p50_added_ms", "ttft_p50_added_beyond_retrieval_ms"]
COST_KEYS = ["ttft_p50_added_ms", "tpot_p50_added_ms", "throughput_ratio"]


def _mean(key: str, values: list[float]) -> float:
    """Ratios by geometric mean, times (ms) by arithmetic mean."""
    return math.prod(values) ** (1 / len(values)) if key == "throughput_ratio" else statistics.fmean(values)


def mean_of_orders(reports: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Each run's medians, averaged over the start orders, per Ripple server (and rails cost) and level."""

    def combine(rows_by_report: list[list[dict[str, Any]]], keys: list[str]) -> list[dict[str, Any]]:
        out = []
        for rows in zip(*rows_by_report, strict=True):
            row: dict[str, Any] = {"concurrency": rows[0]["concurrency"]}
            for key in keys:
                values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
                row[key] = _mean(key, values) if len(values) == len(rows) else None
                row[f"{key}_by_order"] = [r.get(key) for r in rows]
            out.append(row)
        return out

    mean: dict[str, Any] = {name: combine([r["ratios_by_rails"][name] for r in reports], RATIO_KEYS) for name in names}
    if all(r["rails_cost"] for r in reports):
        mean["rails_cost"] = combine([r["rails_cost"] for r in reports], COST_KEYS)
    return mean


def print_mean_of_orders(mean: dict[str, Any], orders: list[list[str]]) -> None:
    print(f"Mean of the start orders {' and '.join(','.join(o) for o in orders)} (ratios: geometric mean), "
          "each order's median in brackets:")  # fmt: skip
    for name, rows in mean.items():
        title = "rails' own cost (on minus off)" if name == "rails_cost" else f"Ripple with rails {name} against raw"
        keys = COST_KEYS if name == "rails_cost" else RATIO_KEYS
        for row in rows:
            cells = [f"{k} {fmt(row[k], 3)} [{', '.join(fmt(v, 3) for v in row[k + '_by_order'])}]" for k in keys]
            print(f"  {title}, c={row['concurrency']}: " + "; ".join(cells))


def run_order(
    args: argparse.Namespace, names: list[str], start_order: list[str], questions: list[str], logs: Path
) -> dict[str, Any]:
    """Start the servers in `start_order`, run the interleaved rounds, print them; the run's report."""
    # rounds[r][server] = reports by concurrency; server is "on", "off" (Ripple's rails) or "raw".
    rounds: list[dict[str, list[dict[str, Any]]]] = []
    starts: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as servers:
        env = {"RIPPLE_QDRANT_PATH": f"{tmp}/qdrant"}
        # The settings `ripple serve` reads from the same environment (RIPPLE_* variables, RIPPLE_CONFIG).
        overrides: dict[str, Any] = {"qdrant_path": Path(env["RIPPLE_QDRANT_PATH"])}
        settings = Settings(**overrides)
        subprocess.run([RIPPLE, "index", str(DOCS)], env={**os.environ, **env}, check=True, capture_output=True)
        up: dict[str, Served] = {}
        for name in start_order:
            if name == "raw":
                up["raw"] = servers.enter_context(vllm_server(settings, logs / "vllm.log"))
            else:
                rails = {name: {"RIPPLE_GUARDS_ENABLED": str(name == "on").lower()}}
                up |= servers.enter_context(ripple_servers(rails, Path(env["RIPPLE_QDRANT_PATH"]), logs))
        starts = {name: served.start_seconds for name, served in up.items()}
        prompts, differed = augmented(up[names[0]].base_url, settings, questions)
        order = [*names, "raw"]
        for r in range(args.rounds):
            turn = order[r % len(order) :] + order[: r % len(order)]
            print(f"round {r + 1}/{args.rounds}: {' '.join(turn)}", flush=True)
            rounds.append(
                {
                    name: run_loads(
                        up[name],
                        prompts if name == "raw" else as_messages(questions),
                        args,
                        ripple=name != "raw",
                    )
                    for name in turn
                }
            )
    per_round = {
        name: [[ratios(a, b) for a, b in zip(r[name], r["raw"], strict=True)] for r in rounds] for name in names
    }
    for r, result in enumerate(rounds, 1):
        for name in names:
            print(f"round {r}, Ripple with rails {name} against raw vLLM:")
            print_table(per_round[name][r - 1], result[name], result["raw"])
    medians = {name: summarise(rows) for name, rows in per_round.items()}
    keys = ["throughput_ratio", "ttft_p50_added_ms", "ttft_p50_added_beyond_retrieval_ms"]
    for name in names:
        print_medians(f"Ripple with rails {name} against raw vLLM, median over {args.rounds} rounds [range]:",
                      medians[name], keys)  # fmt: skip
    rails_cost = None
    if len(names) == 2:
        rails_cost = summarise([rails_costs(r["on"], r["off"]) for r in rounds])
        print_medians(
            f"Rails' own cost (rails on minus off, same prompts), median over {args.rounds} rounds [range]:",
            rails_cost,
            ["ttft_p50_added_ms", "tpot_p50_added_ms", "throughput_ratio"],
        )
    mismatched = sorted(
        {q for r in rounds for name in names for a, b in zip(r[name], r["raw"], strict=True)
         for q, n in a["prompt_tokens_by_prompt"].items() if n != b["prompt_tokens_by_prompt"].get(q)}
    )  # fmt: skip
    print(f"questions whose /v1/retrieve passages differed from Ripple's citations (citations used): {differed}")
    if mismatched:
        print(f"warning: prompts {mismatched} had other lengths on the two servers (not like for like)")
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
            "rounds": args.rounds,
            "max_tokens": args.max_tokens,
            "ignore_eos": True,
            "temperature": 0.0,
            "questions": len(questions),
            "rails": args.rails,
        },
        "start_s": starts,
        "start_order": start_order,
        "ratios": medians[names[0]],
        "ratios_by_rails": medians,
        "ratios_by_round": per_round,
        "rails_cost": rails_cost,
        "retrieve_differed_from_citations": differed,
        "prompt_length_mismatches": mismatched,
        "reports_by_round": rounds,
    }
    return report


if __name__ == "__main__":
    main()

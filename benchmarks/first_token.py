"""Time to first token for one question, and where it goes, with and without the rails.

Starts `ripple serve` with the default rails and with RIPPLE_GUARDS_ENABLED=false (the baseline), both
up at once, and asks each the same streamed question about the docs N times, in turn, the order
rotated each time, so the machine's drift falls on both alike (one server after the other measured
the drift: two identical servers run one after the other differed by about 60 ms at p50). Splits the
client's TTFT using the server's own histograms: retrieval, input rails, the engine's TTFT (vLLM's
`vllm:time_to_first_token_seconds`) and the rest (output-rail window, framing, HTTP).
Run: `python -m benchmarks.first_token --json out.json`.
`--versus KEY=VALUE` (repeatable) adds a server with those variables beside each of the two, asked in
the same turns, and prints its TTFT against the default's: e.g. `--versus RIPPLE_EMBED_BACKEND=onnx-int8`;
`--rails on` (or off) with it runs only that pair (fewer servers sharing the machine).
Caveat, measured on the build machines: the server started first was slower than the others in every
run (TTFT p50 0.76 vs 0.54 s for two identical servers, whichever was asked first; pinning the API
processes to the other core did not remove it; two bare embedding processes show it too, see
benchmarks/start_order.py). So for an A/B use `--both-orders`: everything runs twice, the servers
started in reverse order the second time, and the comparisons are made on the mean of the two runs.
A RIPPLE_ key must name a setting (an unknown one would be ignored by the server, comparing a
configuration with itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import (
    RIPPLE,
    Served,
    chat_model,
    histogram_mean,
    histogram_sums,
    machine,
    parse_versus,
    ripple_servers,
    stream_once,
)

QUESTION = "How do I point Ripple at a Qdrant server instead of a local folder?"


PAUSE_S = 1.2
"""Between questions: a vLLM worker keeps a core busy for 1 s after each request, which would fall on
the next server's question."""


async def measure(up: dict[str, Served], n: int, max_tokens: int) -> dict[str, dict[str, float]]:
    """Ask every server the question n times, in turn, the order rotated each time; then each one's figures."""
    body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": max_tokens, "temperature": 0}
    names = list(up)
    ttfts: dict[str, list[float]] = {name: [] for name in names}
    async with httpx.AsyncClient(timeout=300) as client:
        for name in names:
            await stream_once(client, up[name].base_url, body)  # warm-up, not counted
        before = {name: histogram_sums(up[name].base_url) for name in names}
        for i in range(n):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                await asyncio.sleep(PAUSE_S)
                ttfts[name].append((await stream_once(client, up[name].base_url, body)).ttft)
        after = {name: histogram_sums(up[name].base_url) for name in names}
    return {name: summary(ttfts[name], before[name], after[name], up[name].start_seconds) for name in names}


def summary(ttfts: list[float], before: dict[str, float], after: dict[str, float], start: float) -> dict[str, float]:
    def mean(name: str) -> float:
        return histogram_mean(name, before, after) or 0.0

    result = {
        "start_s": start,
        "ttft_p50_s": statistics.median(ttfts),
        "ttft_mean_s": statistics.fmean(ttfts),
        "retrieval_mean_s": mean("ripple_retrieval_seconds"),
        "input_rails_mean_s": mean('ripple_rails_seconds{rail="input"}'),
        "engine_ttft_mean_s": mean("vllm:time_to_first_token_seconds"),
    }
    result["other_mean_s"] = result["ttft_mean_s"] - result["engine_ttft_mean_s"] - result["retrieval_mean_s"]
    return result


COLUMNS = ["ttft_p50_s", "retrieval_mean_s", "input_rails_mean_s", "engine_ttft_mean_s", "other_mean_s", "start_s"]


def print_results(results: dict[str, dict[str, float]]) -> None:
    print(f"{'config':<16} " + " ".join(f"{c:>18}" for c in COLUMNS))
    for name, r in results.items():
        print(f"{name:<16} " + " ".join(f"{r[c]:>18.3f}" for c in COLUMNS))


def mean_of_runs(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each configuration's figures averaged over the runs (one run: its own figures), in the first run's order."""
    return {name: {key: statistics.fmean(run[name][key] for run in runs) for key in runs[0][name]} for name in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=10, help="questions per configuration")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--versus", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--rails", choices=["on", "off", "both"], default="both", help="which of the two to run")
    parser.add_argument(
        "--both-orders",
        action="store_true",
        help="run twice, the servers started in reverse order the second time; report the mean of the two",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        versus = parse_versus(args.versus)
    except ValueError as exc:
        parser.error(str(exc))
    rails = ["on", "off"] if args.rails == "both" else [args.rails]
    if len(rails) == 1 and not versus:
        parser.error(f"--rails {args.rails} compares nothing without --versus")
    configs = {f"rails_{r}": {"RIPPLE_GUARDS_ENABLED": str(r == "on").lower()} for r in rails}
    if versus:
        configs |= {f"{name}+versus": {**env, **versus} for name, env in configs.items()}
    orders = [list(configs), list(configs)[::-1]] if args.both_orders else [list(configs)]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "qdrant"
        docs = Path(__file__).resolve().parent.parent / "docs"
        subprocess.run(
            [RIPPLE, "index", str(docs)],
            env={**os.environ, "RIPPLE_QDRANT_PATH": str(index)},
            check=True,
            capture_output=True,
        )
        for i, order in enumerate(orders):
            logs = Path(tmp) / f"order-{i}"
            logs.mkdir()
            # Each run on fresh copies of the one index (the servers of a run copy it once more each).
            shutil.copytree(index, logs / "qdrant")
            with ripple_servers({name: configs[name] for name in order}, logs / "qdrant", logs) as up:
                runs.append({"start_order": order, "results": asyncio.run(measure(up, args.n, args.max_tokens))})
            if len(orders) > 1:
                print(f"started in the order {', '.join(order)}:")
                print_results(runs[-1]["results"])
    results = mean_of_runs([run["results"] for run in runs])
    if len(orders) > 1:
        print("mean of the two orders:")
    print_results(results)
    suffixes = ["", "+versus"] if versus else [""]
    for suffix in suffixes if len(rails) == 2 else []:
        on, off = results[f"rails_on{suffix}"]["ttft_p50_s"], results[f"rails_off{suffix}"]["ttft_p50_s"]
        print(
            f"rails add {(on - off) * 1000:.0f} ms to TTFT p50 ({on / off:.2f}x)",
            f"with {versus}" if suffix else "",
        )
    for side in rails if versus else ():
        a, b = results[f"rails_{side}"]["ttft_p50_s"], results[f"rails_{side}+versus"]["ttft_p50_s"]
        print(f"rails {side}: TTFT p50 with {versus} is {b / a:.2f}x the default's ({(b - a) * 1000:+.0f} ms)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": machine(),
            "model": chat_model(),
            "question": QUESTION,
            "load": {"n": args.n, "max_tokens": args.max_tokens, "concurrency": 1, "pause_s": PAUSE_S},
            "versus": versus,
            "rails": args.rails,
            "results": results,
            "orders": runs if len(runs) > 1 else None,
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

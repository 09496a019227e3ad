"""A/B of one configuration change under load: Ripple as it is (A) against Ripple with `--versus KEY=VALUE` (B).

Both `ripple serve` processes are up at once and get the same closed-loop loads (`benchmarks.load`, the
same questions about docs/, streamed, `ignore_eos` so every answer has `--max-tokens` tokens unless
`--until-eos`), in rounds with the order rotated, so the machine's drift falls on both alike. A key may be a Ripple
setting (RIPPLE_...) or any variable the server's libraries read (e.g. vLLM's
VLLM_CPU_NUM_OF_RESERVED_CPU). With `--both-orders` everything runs twice, the servers started in
reverse order the second time (the one started first ran slower on these machines; see
benchmarks/start_order.py), and the figures are the mean of the two orders: output-token throughput
B/A (geometric mean), TTFT p50 and TPOT p50 of B minus A.
Run: `python -m benchmarks.ab_load --versus RIPPLE_ENGINE_CPU_RESERVED_CORES=1 --concurrency 1,8 --both-orders`
(on 2 cores: vLLM's own reservation of one core, B, against Ripple's default of none, A). B must
differ from A: a change A already has compares a configuration with itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.compare import QUESTIONS
from benchmarks.harness import RIPPLE, chat_model, machine, parse_versus, ripple_servers
from benchmarks.load import Load, run_load
from benchmarks.prompts import as_messages

DOCS = Path(__file__).resolve().parent.parent / "docs"


def run_order(
    configs: dict[str, dict[str, str]], index: Path, logs: Path, args: argparse.Namespace
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Start the servers in the order of `configs`; every server's reports per concurrency, one per round."""
    prompts = as_messages(QUESTIONS)
    reports: dict[str, dict[int, list[dict[str, Any]]]] = {name: {c: [] for c in args.concurrency} for name in configs}
    shutil.copytree(index, logs / "qdrant")
    with ripple_servers(configs, logs / "qdrant", logs) as up:
        names = list(configs)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                for c in args.concurrency:
                    report = asyncio.run(
                        run_load(
                            up[name].base_url,
                            prompts,
                            Load(concurrency=c),
                            requests=args.requests,
                            max_tokens=args.max_tokens,
                            warmup=1,
                            extra_body={"temperature": 0.0, "ignore_eos": not args.until_eos},
                        )
                    )
                    if set(report["status_counts"]) != {"200"}:
                        raise SystemExit(f"{name} at c={c}: {report['status_counts']} {report['errors']}")
                    reports[name][c].append(report)
                    print(
                        f"round {r + 1} {name:<2} c={c}: {report['throughput']['output_tokens_per_s']:.1f} tok/s, "
                        f"TTFT p50 {report['ttft_ms']['p50']:.0f} ms",
                        flush=True,
                    )
    return reports


def medians(reports: dict[str, dict[int, list[dict[str, Any]]]], concurrency: list[int]) -> dict[str, dict[int, Any]]:
    """Per server and concurrency: the medians over rounds of throughput, TTFT p50 and TPOT p50."""
    return {
        name: {
            c: {
                "output_tokens_per_s": statistics.median(r["throughput"]["output_tokens_per_s"] for r in by_c[c]),
                "ttft_p50_ms": statistics.median(r["ttft_ms"]["p50"] for r in by_c[c]),
                "tpot_p50_ms": statistics.median(r["tpot_ms"]["p50"] for r in by_c[c]),
            }
            for c in concurrency
        }
        for name, by_c in reports.items()
    }


def versus(m: dict[str, dict[int, Any]], c: int) -> dict[str, float]:
    a, b = m["A"][c], m["B"][c]
    return {
        "throughput_ratio": b["output_tokens_per_s"] / a["output_tokens_per_s"],
        "ttft_p50_diff_ms": b["ttft_p50_ms"] - a["ttft_p50_ms"],
        "tpot_p50_diff_ms": b["tpot_p50_ms"] - a["tpot_p50_ms"],
    }


def row(c: int, label: str, v: dict[str, float]) -> str:
    ratio, ttft, tpot = v["throughput_ratio"], v["ttft_p50_diff_ms"], v["tpot_p50_diff_ms"]
    return f"{c:>3} {label:>6} {ratio:>10.2f} {ttft:>+12.0f} {tpot:>+12.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versus", action="append", required=True, metavar="KEY=VALUE", help="B's change (repeatable)")
    parser.add_argument("--concurrency", default="1,8", help="closed-loop levels, comma-separated")
    parser.add_argument("--requests", type=int, default=24, help="requests per level, server and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over both servers, order rotated each round")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--until-eos",
        action="store_true",
        help="answers end where the model ends them (at most --max-tokens) instead of ignore_eos: for changes "
        "whose effect depends on the text itself (speculative decoding), as text past the model's end is not "
        "what users get",
    )
    parser.add_argument("--rails", choices=["on", "off"], default="on", help="Ripple's rails, on both servers")
    parser.add_argument(
        "--both-orders", action="store_true", help="run twice, the start order reversed; report the mean"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    try:
        change = parse_versus(args.versus)
    except ValueError as exc:
        parser.error(str(exc))
    base = {"RIPPLE_GUARDS_ENABLED": str(args.rails == "on").lower()}
    configs = {"A": base, "B": {**base, **change}}
    orders = [["A", "B"], ["B", "A"]] if args.both_orders else [["A", "B"]]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "qdrant"
        env = {**os.environ, "RIPPLE_QDRANT_PATH": str(index)}
        subprocess.run([RIPPLE, "index", str(DOCS)], env=env, check=True, capture_output=True)
        for i, order in enumerate(orders):
            logs = Path(tmp) / f"order-{i}"
            logs.mkdir()
            print(f"servers started in the order {', '.join(order)}", flush=True)
            med = medians(run_order({name: configs[name] for name in order}, index, logs, args), args.concurrency)
            runs.append({"start_order": order, "medians": med, "versus": {c: versus(med, c) for c in args.concurrency}})
    print(f"B = A with {change}, rails {args.rails}; medians over {args.rounds} rounds")
    print(f"{'c':>3} {'order':>6} {'B/A tok/s':>10} {'TTFT B-A ms':>12} {'TPOT B-A ms':>12}")
    mean: dict[int, dict[str, float]] = {}
    for c in args.concurrency:
        for run in runs:
            v = run["versus"][c]
            print(row(c, "".join(run["start_order"]), v))
        vs = [run["versus"][c] for run in runs]
        mean[c] = {
            "throughput_ratio": math.exp(statistics.fmean(math.log(v["throughput_ratio"]) for v in vs)),
            "ttft_p50_diff_ms": statistics.fmean(v["ttft_p50_diff_ms"] for v in vs),
            "tpot_p50_diff_ms": statistics.fmean(v["tpot_p50_diff_ms"] for v in vs),
        }
        if len(runs) > 1:
            print(row(c, "mean", mean[c]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": machine(),
            "model": chat_model(),
            "versus": change,
            "load": {
                k: getattr(args, k) for k in ("concurrency", "requests", "rounds", "max_tokens", "until_eos", "rails")
            },
            "runs": runs,
            "mean_of_orders": mean,
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

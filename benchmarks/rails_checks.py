"""Each rail check's own latency, in-process: NeMo Guardrails with the default config, the real packaged
embedder (MiniLM) and SciFact abstracts as the retrieved passages.

Per round: the input rail on a question, the retrieval rail on 5 passages, then the output rails as a
stream calls them: on the first word, on the first complete sentence (groundedness embeds it) and on
the second. The output checks get the passages' vectors as the runtime does (the store returns them),
or, with `--no-vectors`, none, so groundedness embeds each passage once. Prints p50/p95
per check and writes JSON. Run: `python -m benchmarks.rails_checks [--rounds 20] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from benchmarks.harness import machine
from guards import DEFAULT_CONFIG
from guards.evaluation import no_llm
from guards.nemo import NemoGuard
from indexer.embedder import SentenceTransformerEmbedder
from indexer.types import Passage
from runtime.models import packaged_embedder_path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


async def measure(rounds: int, vectors: bool) -> dict[str, list[float]]:
    lines = (DATA / "scifact" / "corpus.jsonl").read_text().splitlines()
    rng = random.Random(0)
    embedder = SentenceTransformerEmbedder(str(packaged_embedder_path()), device="cpu")
    embedder.start()
    embedder.embed(["warm-up"])
    guard = NemoGuard(DEFAULT_CONFIG, no_llm, embed=embedder.embed)
    await guard.start()
    times: dict[str, list[float]] = {
        k: [] for k in ("input", "retrieval", "output_first_word", "output_first_sentence", "output_second_sentence")
    }

    async def timed(name: str, call: Awaitable[Any]) -> None:
        start = time.perf_counter()
        await call
        times[name].append(1000 * (time.perf_counter() - start))

    for i in range(rounds):
        docs = [json.loads(line) for line in rng.sample(lines, 5)]
        texts = [f"{d['title']}. {d['text']}"[:1000] for d in docs]
        stored = embedder.embed(texts) if vectors else [None] * len(texts)
        passages = [
            Passage(f"c{i}", f"d{i}", "scifact", t, 1.0, 0, len(t), vector=tuple(v) if v is not None else None)
            for i, (t, v) in enumerate(zip(texts, stored, strict=True))
        ]
        question = [{"role": "user", "content": f"What does study {i} report about cell growth?"}]
        first = f"According to study {i}, the cells grew faster in the treated cultures. "
        second = first + "The effect was smaller in older animals than in young ones. "
        await timed("input", guard.check_input(question))
        await timed("retrieval", guard.check_retrieval(texts))
        await timed("output_first_word", guard.check_output(question, "According ", passages))
        await timed("output_first_sentence", guard.check_output(question, first, passages))
        await timed("output_second_sentence", guard.check_output(question, second, passages))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--vectors", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    times = asyncio.run(measure(args.rounds, args.vectors))
    summary = {
        k: {"p50_ms": statistics.median(v), "p95_ms": sorted(v)[int(0.95 * (len(v) - 1))], "n": len(v)}
        for k, v in times.items()
    }
    print(f"{'check':<24} {'p50 ms':>8} {'p95 ms':>8}")
    for name, s in summary.items():
        print(f"{name:<24} {s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": machine(), "vectors": args.vectors, "rounds": args.rounds, "checks": summary}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

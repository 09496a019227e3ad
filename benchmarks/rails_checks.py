"""Each rail check's own latency, in-process: NeMo Guardrails with the default config, the real packaged
embedder (MiniLM) and SciFact abstracts as the retrieved passages.

Per round: the input rail on a question, the retrieval rail on 5 passages, then the output rails as a
stream calls them: on the first word, on the first complete sentence (groundedness embeds it) and on
the second. The output checks get the passages' vectors as the runtime does (the store returns them),
or, with `--no-vectors`, none, so groundedness embeds each passage once. Each round runs every check
twice, in turn (the order alternating by round): through the path Ripple uses (its packaged flows'
actions run by NeMo's action dispatcher) and through NeMo's `check_async` (`NemoGuard(direct=False)`).
Prints p50/p95 per check and path and writes JSON.
Run: `python -m benchmarks.rails_checks [--rounds 20] [--json PATH]`.
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


PATHS = ("direct", "nemo")
CHECKS = ("input", "retrieval", "output_first_word", "output_first_sentence", "output_second_sentence")


async def measure(rounds: int, vectors: bool) -> dict[str, dict[str, list[float]]]:
    """times[path][check]: milliseconds per call."""
    lines = (DATA / "scifact" / "corpus.jsonl").read_text().splitlines()
    rng = random.Random(0)
    embedder = SentenceTransformerEmbedder(str(packaged_embedder_path()), device="cpu")
    embedder.start()
    embedder.embed(["warm-up"])
    guards = {path: NemoGuard(DEFAULT_CONFIG, no_llm, embed=embedder.embed, direct=path == "direct") for path in PATHS}
    for guard in guards.values():
        await guard.start()
    times: dict[str, dict[str, list[float]]] = {path: {k: [] for k in CHECKS} for path in PATHS}

    async def timed(path: str, name: str, call: Awaitable[Any]) -> None:
        start = time.perf_counter()
        await call
        times[path][name].append(1000 * (time.perf_counter() - start))

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
        for path in PATHS if i % 2 == 0 else PATHS[::-1]:
            guard = guards[path]
            await timed(path, "input", guard.check_input(question))
            await timed(path, "retrieval", guard.check_retrieval(texts))
            await timed(path, "output_first_word", guard.check_output(question, "According ", passages))
            await timed(path, "output_first_sentence", guard.check_output(question, first, passages))
            await timed(path, "output_second_sentence", guard.check_output(question, second, passages))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--vectors", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    times = asyncio.run(measure(args.rounds, args.vectors))
    summary = {
        path: {
            k: {"p50_ms": statistics.median(v), "p95_ms": sorted(v)[int(0.95 * (len(v) - 1))], "n": len(v)}
            for k, v in checks.items()
        }
        for path, checks in times.items()
    }
    print(f"{'check':<24} {'direct p50':>10} {'p95':>7} {'nemo p50':>9} {'p95':>7}  (ms)")
    for name in CHECKS:
        d, n = summary["direct"][name], summary["nemo"][name]
        print(f"{name:<24} {d['p50_ms']:>10.1f} {d['p95_ms']:>7.1f} {n['p50_ms']:>9.1f} {n['p95_ms']:>7.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": machine(), "vectors": args.vectors, "rounds": args.rounds, "checks": summary}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Concurrent query embeddings, each call on its own against `CoalescingEmbedder`, in-process.

N threads each embed one question at the same moment, as N requests' retrievals do under load; a
round's wall time is until the last has its vector. The two embedders (the packaged MiniLM, plain and
wrapped) alternate round by round, so the machine's drift falls on both. Prints the median wall time
and per-call latency per level and embedder, and the ratio, and writes JSON.
Run: `python -m benchmarks.embed_coalesce [--concurrency 1,4,8] [--rounds 20] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.harness import machine
from indexer.embedder import CoalescingEmbedder, Embedder, SentenceTransformerEmbedder
from runtime.models import packaged_embedder_path


def one_round(embedder: Embedder, questions: list[str]) -> tuple[float, list[float]]:
    def call(question: str) -> float:
        start = time.perf_counter()
        embedder.embed([question])
        return time.perf_counter() - start

    with ThreadPoolExecutor(len(questions)) as pool:
        start = time.perf_counter()
        latencies = list(pool.map(call, questions))
        return time.perf_counter() - start, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    plain = SentenceTransformerEmbedder(str(packaged_embedder_path()), device="cpu")
    plain.start()
    plain.embed(["warm-up"])
    embedders: dict[str, Embedder] = {"plain": plain, "coalesced": CoalescingEmbedder(plain)}
    results = []
    print(f"{'conc':>5} {'embedder':>10} {'wall p50 ms':>12} {'call p50 ms':>12} {'call p95 ms':>12}")
    for n in (int(c) for c in args.concurrency.split(",")):
        questions = [f"How do I configure retrieval option {i} for the Qdrant server?" for i in range(n)]
        walls: dict[str, list[float]] = {name: [] for name in embedders}
        calls: dict[str, list[float]] = {name: [] for name in embedders}
        for r in range(args.rounds):
            for name in embedders if r % 2 == 0 else list(embedders)[::-1]:
                wall, latencies = one_round(embedders[name], questions)
                walls[name].append(1000 * wall)
                calls[name] += [1000 * x for x in latencies]
        row = {"concurrency": n}
        for name in embedders:
            ordered = sorted(calls[name])
            row[name] = {
                "wall_p50_ms": statistics.median(walls[name]),
                "call_p50_ms": statistics.median(ordered),
                "call_p95_ms": ordered[int(0.95 * (len(ordered) - 1))],
            }
            print(f"{n:>5} {name:>10} {row[name]['wall_p50_ms']:>12.1f} {row[name]['call_p50_ms']:>12.1f} "
                  f"{row[name]['call_p95_ms']:>12.1f}")  # fmt: skip
        row["wall_ratio"] = row["coalesced"]["wall_p50_ms"] / row["plain"]["wall_p50_ms"]
        print(f"{n:>5} coalesced/plain wall time: {row['wall_ratio']:.2f}")
        results.append(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), "rounds": args.rounds, "levels": results}, indent=2))


if __name__ == "__main__":
    main()

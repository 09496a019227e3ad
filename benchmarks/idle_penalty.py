"""What a pause costs on this machine: each step of a request timed right after a warm run, and again
after the process sat idle for a while.

On the build machines (a nested virtual machine) code and data the process has not touched for a few
hundred milliseconds become slow to touch again: the work is the same, the CPU time is several times
larger. A serving benchmark at one stream pauses every step of Ripple's request path for the length of
an answer, so each request pays this, while a raw vLLM server's engine stays hot. This measures the
effect per step, so TTFT figures from these machines can be read for what they are.

Steps: a pure-Python loop (little memory), a read of 8 MB and of 64 MB of numbers, the BM25 query
encoding, the query embedding (the packaged MiniLM, PyTorch), and the rails through real NeMo (input
rail on a question; output rails on a first word, given 3 passages with vectors). For each step and
pause: one warm run, the pause, then the timed run; medians over `--rounds`.
Run: `python -m benchmarks.idle_penalty [--pauses 0,0.1,0.3,1,2] [--rounds 6] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import machine
from guards import DEFAULT_CONFIG
from guards.evaluation import no_llm
from guards.nemo import NemoGuard
from indexer.embedder import SentenceTransformerEmbedder
from indexer.sparse import Bm25Encoder
from indexer.types import Passage
from runtime.models import packaged_embedder_path

QUESTION = "How do I point Ripple at a Qdrant server instead of a local folder?"
PASSAGES = (
    "Set RIPPLE_QDRANT_URL to the server's address; a local folder is used when it is empty.",
    "The indexer writes chunks with their embeddings and BM25 terms to the collection.",
    "Rails check the input, the retrieved chunks and the answer before it is sent.",
)


def python_loop() -> int:
    return sum(i * i for i in range(100_000))


async def steps() -> dict[str, Callable[[], Any]]:
    embedder = SentenceTransformerEmbedder(str(packaged_embedder_path()), device="cpu")
    embedder.start()
    vectors = embedder.embed(list(PASSAGES))
    passages = [
        Passage(f"c{i}", f"d{i}", "docs", text, 1.0, 0, len(text), vector=tuple(v))
        for i, (text, v) in enumerate(zip(PASSAGES, vectors, strict=True))
    ]
    guard = NemoGuard(DEFAULT_CONFIG, no_llm, embed=embedder.embed)
    await guard.start()
    sparse = Bm25Encoder()
    small, large = np.ones(2 << 20, dtype=np.float32), np.ones(16 << 20, dtype=np.float32)
    messages = [{"role": "user", "content": QUESTION}]
    return {
        "python loop": python_loop,
        "read 8 MB": small.sum,
        "read 64 MB": large.sum,
        "BM25 query": lambda: sparse.encode_query(QUESTION),
        "query embedding": lambda: embedder.embed([QUESTION]),
        "input rail (NeMo)": lambda: guard.check_input(messages),
        "output rails, first word": lambda: guard.check_output(messages, "To ", passages),
    }


async def timed(step: Callable[[], Any]) -> float:
    start = time.perf_counter()
    result = step()
    if inspect.isawaitable(result):
        await result
    return 1000 * (time.perf_counter() - start)


async def measure(pauses: list[float], rounds: int) -> dict[str, dict[str, float]]:
    table = await steps()
    samples: dict[str, dict[float, list[float]]] = {name: {p: [] for p in pauses} for name in table}
    for _ in range(rounds):
        for name, step in table.items():
            for pause in pauses:
                await timed(step)  # warm
                await asyncio.sleep(pause)
                samples[name][pause].append(await timed(step))
    return {name: {f"{p:g}": statistics.median(v) for p, v in by.items()} for name, by in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pauses", default="0,0.1,0.3,1,2", help="seconds of idle before the timed run")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pauses = [float(p) for p in args.pauses.split(",")]
    medians = asyncio.run(measure(pauses, args.rounds))
    keys = [f"{p:g}" for p in pauses]
    print(f"{'step (median ms) / pause s':<28}" + "".join(f"{k:>9}" for k in keys) + f"{'last/first':>12}")
    for name, row in medians.items():
        ratio = row[keys[-1]] / row[keys[0]] if row[keys[0]] else float("nan")
        print(f"{name:<28}" + "".join(f"{row[k]:>9.1f}" for k in keys) + f"{ratio:>11.1f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": machine(), "pauses_s": pauses, "rounds": args.rounds, "median_ms": medians}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

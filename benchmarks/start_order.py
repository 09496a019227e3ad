"""Is a process started first slower than one started after it? No server, no vLLM: two identical
processes each load the packaged MiniLM and embed one question every 1.2 s, taking turns 0.6 s apart
(which of them goes first within a turn alternates between runs), and print their median latency.

Servers up at once were slower when started first (compare.py, first_token.py): this separates that
effect from Ripple and vLLM. Run: `python -m benchmarks.start_order [--runs 3] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import machine

PERIOD_S, CALLS = 1.2, 30


def child(start_at: float, offset: float) -> None:
    from indexer.embedder import SentenceTransformerEmbedder
    from runtime.models import packaged_embedder_path

    embedder = SentenceTransformerEmbedder(str(packaged_embedder_path()), device="cpu")
    embedder.start()
    embedder.embed(["warm-up"])
    latencies = []
    for i in range(CALLS):
        time.sleep(max(0.0, start_at + PERIOD_S * i + offset - time.time()))
        start = time.perf_counter()
        embedder.embed([f"How do I configure option {i} of the server?"])
        latencies.append(1000 * (time.perf_counter() - start))
    print(json.dumps(latencies))


def one_run(offsets: tuple[float, float]) -> tuple[float, float]:
    """Median ms of the process started first and of the one started second."""
    start_at = time.time() + 45  # both loaded by then
    procs = []
    for offset in offsets:
        cmd = [sys.executable, "-m", "benchmarks.start_order", "--child", str(start_at), str(offset)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        time.sleep(10)
    first, second = (statistics.median(json.loads(p.communicate()[0].strip().splitlines()[-1])) for p in procs)
    return first, second


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(float(sys.argv[2]), float(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs = []
    for r in range(args.runs):
        offsets = (0.0, PERIOD_S / 2) if r % 2 == 0 else (PERIOD_S / 2, 0.0)
        first, second = one_run(offsets)
        runs.append({"first_ms": first, "second_ms": second, "first_goes_first_in_turn": r % 2 == 0})
        print(f"run {r + 1}: started first {first:.1f} ms, started second {second:.1f} ms (median per call)")
    ratio = statistics.median(r["first_ms"] / r["second_ms"] for r in runs)
    print(f"started first / started second, median over runs: {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "runs": runs, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()

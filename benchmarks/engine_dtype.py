"""Which vLLM dtype is fastest on this CPU? float32 against bfloat16, same model, same run.

For each dtype it starts `ripple serve` (RIPPLE_DTYPE=...), times start-up to /ready, then sends
the same streamed question sequentially (TTFT, decode tokens/s) and 4 at once (aggregate output
tokens/s). Prints a table and writes JSON. Run: `make bench-dtype` or
`python -m benchmarks.engine_dtype --json out.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import httpx

from benchmarks.harness import RIPPLE, machine, ripple_server, stream_once

QUESTION = "What does Ripple's input rail check, and what happens when it refuses a request?"


async def measure(base_url: str, max_tokens: int, repeats: int) -> dict[str, float]:
    body = {
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
    }
    async with httpx.AsyncClient(timeout=300) as client:
        await stream_once(client, base_url, body)  # warm-up
        single = [await stream_once(client, base_url, body) for _ in range(repeats)]
        start = asyncio.get_running_loop().time()
        batch = await asyncio.gather(*(stream_once(client, base_url, body) for _ in range(4)))
        wall = asyncio.get_running_loop().time() - start
    decode = [(t.completion_tokens - 1) / (t.total - t.ttft) for t in single if t.total > t.ttft]
    return {
        "ttft_p50_s": statistics.median(t.ttft for t in single),
        "decode_tok_s_c1": statistics.median(decode),
        "output_tok_s_c4": sum(t.completion_tokens for t in batch) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"RIPPLE_QDRANT_PATH": f"{tmp}/qdrant"}
        docs = Path(__file__).resolve().parent.parent / "docs"
        subprocess.run([RIPPLE, "index", str(docs)], env={**os.environ, **env}, check=True, capture_output=True)
        for dtype in args.dtypes:
            with ripple_server({**env, "RIPPLE_DTYPE": dtype}, Path(tmp) / f"serve-{dtype}.log") as served:
                results[dtype] = {
                    "start_s": served.start_seconds,
                    **asyncio.run(measure(served.base_url, args.max_tokens, args.repeats)),
                }

    print(f"{'dtype':<10} {'start s':>8} {'TTFT p50 s':>11} {'decode tok/s':>13} {'c=4 out tok/s':>14}")
    for dtype, r in results.items():
        row = f"{dtype:<10} {r['start_s']:>8.1f} {r['ttft_p50_s']:>11.3f}"
        print(f"{row} {r['decode_tok_s_c1']:>13.1f} {r['output_tok_s_c4']:>14.1f}")
    base = args.dtypes[0]
    for dtype in args.dtypes[1:]:
        ratio = results[dtype]["output_tok_s_c4"] / results[base]["output_tok_s_c4"]
        print(f"{dtype} / {base} output tokens/s at c=4: {ratio:.2f}x")
    report = {
        "machine": machine(),
        "model": "SmolLM2-135M-Instruct (packaged, de-quantised)",
        "load": {
            "question": QUESTION,
            "max_tokens": args.max_tokens,
            "ignore_eos": True,
            "repeats": args.repeats,
            "concurrency": [1, 4],
        },
        "results": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

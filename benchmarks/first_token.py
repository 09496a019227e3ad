"""Time to first token for one question, and where it goes, with and without the rails.

Starts `ripple serve` twice in one run (default rails; then RIPPLE_GUARDS_ENABLED=false as the
baseline), asks the same streamed question about the docs N times each, and splits the client's
TTFT using the server's own histograms: retrieval, input rails, the engine's TTFT (vLLM's
`vllm:time_to_first_token_seconds`) and the rest (output-rail window, framing, HTTP).
Run: `python -m benchmarks.first_token --json out.json`.
`--versus KEY=VALUE` (repeatable) adds a server with those variables after each of the two, in the
same run, and prints its TTFT against the default's: e.g. `--versus RIPPLE_EMBED_BACKEND=onnx-int8`.
A RIPPLE_ key must name a setting (an unknown one would be ignored by the server, comparing a
configuration with itself).
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
from runtime.settings import Settings

QUESTION = "How do I point Ripple at a Qdrant server instead of a local folder?"


def histogram_sums(base_url: str) -> dict[str, float]:
    """Sum and count of each histogram series of interest, keyed like `name{labels}_sum`."""
    wanted = ("ripple_retrieval_seconds", 'ripple_rails_seconds{rail="input"}', "vllm:time_to_first_token_seconds")
    out: dict[str, float] = {}
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        for name in wanted:
            metric, _, labels = name.partition("{")
            for suffix in ("_sum", "_count"):
                if line.startswith(metric + suffix) and (not labels or labels.rstrip("}") in line):
                    out[name + suffix] = out.get(name + suffix, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def ask(base_url: str, n: int, max_tokens: int) -> list[float]:
    body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": max_tokens, "temperature": 0}
    async with httpx.AsyncClient(timeout=300) as client:
        await stream_once(client, base_url, body)  # warm-up, not counted
        return [(await stream_once(client, base_url, body)).ttft for _ in range(n)]


def run(env: dict[str, str], log: Path, n: int, max_tokens: int) -> dict[str, float]:
    with ripple_server(env, log) as served:
        asyncio.run(ask(served.base_url, 0, max_tokens))
        before = histogram_sums(served.base_url)
        ttfts = asyncio.run(ask(served.base_url, n, max_tokens))
        after = histogram_sums(served.base_url)

    def mean(name: str) -> float:
        count = after.get(name + "_count", 0) - before.get(name + "_count", 0)
        return (after.get(name + "_sum", 0) - before.get(name + "_sum", 0)) / count if count else 0.0

    result = {
        "start_s": served.start_seconds,
        "ttft_p50_s": statistics.median(ttfts),
        "ttft_mean_s": statistics.fmean(ttfts),
        "retrieval_mean_s": mean("ripple_retrieval_seconds"),
        "input_rails_mean_s": mean('ripple_rails_seconds{rail="input"}'),
        "engine_ttft_mean_s": mean("vllm:time_to_first_token_seconds"),
    }
    result["other_mean_s"] = result["ttft_mean_s"] - result["engine_ttft_mean_s"] - result["retrieval_mean_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=10, help="questions per configuration")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--versus", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    versus: dict[str, str] = {}
    for item in args.versus:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--versus {item!r}: write KEY=VALUE")
        if key.startswith("RIPPLE_") and key.removeprefix("RIPPLE_").lower() not in Settings.model_fields:
            parser.error(f"--versus {key}: no such Ripple setting (see runtime/settings.py)")
        versus[key] = value
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"RIPPLE_QDRANT_PATH": f"{tmp}/qdrant"}
        docs = Path(__file__).resolve().parent.parent / "docs"
        subprocess.run([RIPPLE, "index", str(docs)], env={**os.environ, **env}, check=True, capture_output=True)
        for rails in ("on", "off"):
            config = {**env, "RIPPLE_GUARDS_ENABLED": "true" if rails == "on" else "false"}
            results[f"rails_{rails}"] = run(config, Path(tmp) / f"{rails}.log", args.n, args.max_tokens)
            if versus:
                log = Path(tmp) / f"{rails}-versus.log"
                results[f"rails_{rails}+versus"] = run({**config, **versus}, log, args.n, args.max_tokens)
    cols = ["ttft_p50_s", "retrieval_mean_s", "input_rails_mean_s", "engine_ttft_mean_s", "other_mean_s", "start_s"]
    print(f"{'config':<16} " + " ".join(f"{c:>18}" for c in cols))
    for name, r in results.items():
        print(f"{name:<16} " + " ".join(f"{r[c]:>18.3f}" for c in cols))
    for suffix in ("", "+versus") if versus else ("",):
        on, off = results[f"rails_on{suffix}"]["ttft_p50_s"], results[f"rails_off{suffix}"]["ttft_p50_s"]
        print(
            f"rails add {(on - off) * 1000:.0f} ms to TTFT p50 ({on / off:.2f}x)",
            f"with {versus}" if suffix else "",
        )
    for rails in ("on", "off") if versus else ():
        a, b = results[f"rails_{rails}"]["ttft_p50_s"], results[f"rails_{rails}+versus"]["ttft_p50_s"]
        print(f"rails {rails}: TTFT p50 with {versus} is {b / a:.2f}x the default's ({(b - a) * 1000:+.0f} ms)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": machine(),
            "model": "SmolLM2-135M-Instruct (packaged)",
            "question": QUESTION,
            "load": {"n": args.n, "max_tokens": args.max_tokens, "concurrency": 1},
            "versus": versus,
            "results": results,
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

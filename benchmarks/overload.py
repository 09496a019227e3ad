"""Overload and cut streams against the real server: does Ripple say "busy" early and stop dead work?

1. Index docs/ into a temporary Qdrant folder; start `ripple serve` with the admission bounds given
   (`--max-in-flight`, `--max-waiting`).
2. Unloaded: closed loop, concurrency 1: the TTFT every later figure is compared with.
3. Sustainable: closed loop at concurrency `--max-waiting` (so the waiting bound refuses nothing;
   a closed loop past it spins on 429s): its completed requests per second. The server carries
   more than that with `--max-in-flight` streams, so this is a floor, and 3x of it an overload.
4. Overload: open loop (Poisson) at `--factor` (3) times that rate for `--seconds` (60), while the
   server's process tree (API process, EngineCore, worker) has its resident memory sampled each
   second. Reports the status counts (the target: only 200 and 429, no 5xx), admitted requests'
   TTFT p99 against the unloaded p99 (target <= 2x), and memory at the start, peak and end.
5. Cut streams: `--cut` (100) streams, opened in waves of `--max-in-flight` and each closed right
   after its first content chunk; after each wave, how long until the engine's unfinished-request
   count (`ripple_engine_unfinished_requests`) is back to 0 (target <= 2 s).
Prints a table and writes JSON. Run: `python -m benchmarks.overload --json out.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.compare import DOCS, QUESTIONS
from benchmarks.harness import RIPPLE, machine, ripple_server, sse_lines
from benchmarks.load import Load, fmt, run_load
from benchmarks.prompts import as_messages


class MemorySampler:
    """Resident memory of a process and its children, once a second, in a thread."""

    def __init__(self, pid: int) -> None:
        self._root = psutil.Process(pid)
        self.samples: list[tuple[float, float]] = []
        self.by_process: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_mb(self) -> dict[str, float]:
        """MiB per process: "api" (the `ripple serve` process) and each child by its name (EngineCore...)."""
        sizes: dict[str, float] = {}
        for p in [self._root, *self._root.children(recursive=True)]:
            try:
                name = "api" if p.pid == self._root.pid else f"{p.name()}:{p.pid}"
                sizes[name] = p.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                pass
        return sizes

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            sizes = self.rss_mb()
            self.samples.append((time.perf_counter() - start, sum(sizes.values())))
            self.by_process.append(sizes)
            self._stop.wait(1.0)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        values = [mb for _, mb in self.samples]
        first, middle, last = self.by_process[0], self.by_process[len(self.by_process) // 2], self.by_process[-1]
        return {
            "start_mb": values[0],
            "peak_mb": max(values),
            "end_mb": values[-1],
            "samples": len(values),
            "growth_mb_by_process": {name: last[name] - first[name] for name in first if name in last},
            # Warm-up (caches, allocator pools) happens early; a leak keeps growing in the second half.
            "second_half_growth_mb_by_process": {name: last[name] - middle[name] for name in middle if name in last},
        }


def unfinished(client: httpx.Client, base_url: str) -> float:
    for line in client.get(f"{base_url}/metrics").text.splitlines():
        if line.startswith("ripple_engine_unfinished_requests "):
            return float(line.split()[1])
    raise RuntimeError("ripple_engine_unfinished_requests is missing from /metrics")


async def open_and_cut(client: httpx.AsyncClient, base_url: str, body: dict[str, Any]) -> httpx.Response:
    """Open a stream and return it, open, once its first content chunk has arrived."""
    request = client.build_request("POST", f"{base_url}/v1/chat/completions", json=body)
    response = await client.send(request, stream=True)
    if response.status_code != 200:
        await response.aclose()
        raise RuntimeError(f"stream refused: {response.status_code} {(await response.aread())[:200]!r}")
    async for line in sse_lines(response):
        if line.startswith("data: ") and '"content"' in line:
            break
    return response


async def cut_streams(base_url: str, total: int, wave: int, max_tokens: int) -> list[float]:
    """Open `wave` streams one by one, cut them all, time the engine's return to 0; until `total` are cut."""
    recoveries: list[float] = []
    questions = as_messages(QUESTIONS)
    async with httpx.AsyncClient(timeout=120) as client:
        with httpx.Client(timeout=10) as probe:
            done = 0
            while done < total:
                n = min(wave, total - done)
                opened = []
                for i in range(n):
                    body = {"messages": questions[(done + i) % len(questions)], "stream": True}
                    opened.append(await open_and_cut(client, base_url, {**body, "max_tokens": max_tokens}))
                for response in opened:
                    await response.aclose()
                cut = time.perf_counter()
                while unfinished(probe, base_url) != 0:
                    if time.perf_counter() - cut > 30:
                        raise RuntimeError("the engine still holds cut streams 30 s later")
                    await asyncio.sleep(0.02)
                recoveries.append(time.perf_counter() - cut)
                done += n
    return recoveries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-in-flight", type=int, default=8, help="RIPPLE_MAX_CONCURRENT_REQUESTS")
    parser.add_argument("--max-waiting", type=int, default=2, help="RIPPLE_MAX_WAITING_REQUESTS")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=32, help="requests for the unloaded and sustainable runs")
    parser.add_argument("--factor", type=float, default=3.0, help="overload rate / sustainable rate")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the overload")
    parser.add_argument("--cut", type=int, default=100, help="streams to cut after their first token")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="ripple-overload-"))
    print(f"server log: {logs / 'ripple.log'}")
    prompts = as_messages(QUESTIONS)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "RIPPLE_QDRANT_PATH": f"{tmp}/qdrant",
            "RIPPLE_MAX_CONCURRENT_REQUESTS": str(args.max_in_flight),
            "RIPPLE_MAX_WAITING_REQUESTS": str(args.max_waiting),
        }
        subprocess.run([RIPPLE, "index", str(DOCS)], env={**os.environ, **env}, check=True, capture_output=True)
        with ripple_server(env, logs / "ripple.log") as served:
            base = served.base_url

            def load(kind: Load, requests: int, warmup: int = 0) -> dict[str, Any]:
                return asyncio.run(
                    run_load(base, prompts, kind, requests=requests, max_tokens=args.max_tokens, warmup=warmup)
                )

            unloaded = load(Load(concurrency=1), args.requests, warmup=1)
            sustainable = load(Load(concurrency=args.max_waiting), args.requests)
            if set(sustainable["status_counts"]) != {"200"}:
                raise SystemExit(f"the sustainable run was refused: {sustainable['status_counts']}")
            rate = sustainable["throughput"]["requests_per_s"] * args.factor
            with MemorySampler(served.pid) as memory:
                overload = load(Load(rate=rate), max(1, round(rate * args.seconds)))
            recoveries = asyncio.run(cut_streams(base, args.cut, args.max_in_flight, max_tokens=256))
    counts = overload["status_counts"]
    # Everything but a 200 or a 429: 5xx, other statuses, timeouts, connection and stream errors.
    failures = sum(n for status, n in counts.items() if status not in ("200", "429"))
    u, o = unloaded["ttft_ms"], overload["ttft_ms"]
    # None when the overload run admitted nothing (no latency to compare).
    ttft_ratio = o["p99"] / u["p99"] if o["p99"] is not None and u["p99"] else None
    p50_ratio = o["p50"] / u["p50"] if o["p50"] is not None and u["p50"] else None
    mem = memory.summary()
    rows = [
        ("unloaded TTFT p50 / p99 (ms)", f"{fmt(u['p50'])} / {fmt(u['p99'])}"),
        ("sustainable rate (req/s)", f"{sustainable['throughput']['requests_per_s']:.2f}"),
        ("overload rate (req/s), length", f"{rate:.2f}, {overload['throughput']['duration_s']:.0f} s"),
        ("overload status counts", json.dumps(counts)),
        ("admitted TTFT p50 / p99 (ms)", f"{fmt(o['p50'])} / {fmt(o['p99'])}"),
        ("  x unloaded p50 / p99", f"{fmt(p50_ratio, 2)}x / {fmt(ttft_ratio, 2)}x"),
        ("memory start / peak / end (MiB)", f"{mem['start_mb']:.0f} / {mem['peak_mb']:.0f} / {mem['end_mb']:.0f}"),
        ("  growth by process (MiB)", ", ".join(f"{k} {v:+.0f}" for k, v in mem["growth_mb_by_process"].items())),
        (
            "  of it in the second half (MiB)",
            ", ".join(f"{k} {v:+.0f}" for k, v in mem["second_half_growth_mb_by_process"].items()),
        ),
        ("cut streams: engine back to 0 (s)", f"max {max(recoveries):.2f}, mean {statistics.mean(recoveries):.2f}"),
    ]
    for label, value in rows:
        print(f"{label:<36} {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": machine(),
            "settings": {"max_in_flight": args.max_in_flight, "max_waiting": args.max_waiting},
            "load": {"max_tokens": args.max_tokens, "factor": args.factor, "seconds": args.seconds, "cut": args.cut},
            "unloaded": unloaded,
            "sustainable": sustainable,
            "overload_rate": rate,
            "overload": overload,
            "neither_200_nor_429": failures,
            "ttft_p99_ratio": ttft_ratio,
            "memory": {**mem, "series": memory.samples, "series_by_process": memory.by_process},
            "cut_recovery_s": recoveries,
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

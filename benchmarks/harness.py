"""Shared benchmark plumbing: spawn `ripple serve` on a free port, stream one request, describe the machine.

Benchmarks measure Ripple from outside, over HTTP, exactly as a client sees it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

RIPPLE = str(Path(sys.executable).parent / "ripple")


def machine() -> dict[str, object]:
    cpu = platform.processor()
    flags: set[str] = set()
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), cpu)
        flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "avx2": "avx2" in flags,
        "python": platform.python_version(),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    base_url: str
    start_seconds: float
    pid: int = 0


@contextmanager
def served_process(
    cmd: list[str], env: dict[str, str], port: int, probe: str, log: Path, timeout: float = 600
) -> Iterator[Served]:
    """Run a server command until the block ends; wait until GET `probe` answers 200, and time that."""
    name = Path(cmd[0]).name if cmd[0] != sys.executable else " ".join(cmd[1:3])
    started = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {log}")
            try:
                if httpx.get(f"{base}{probe}", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"{name} not ready after {timeout}s; see {log}")
            time.sleep(0.5)
        yield Served(base, time.perf_counter() - started, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@contextmanager
def ripple_server(env_overrides: dict[str, str], log: Path, timeout: float = 600) -> Iterator[Served]:
    """Run `ripple serve` with extra RIPPLE_* settings until the block ends; time it to /ready."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **env_overrides}
    port = free_port()
    with served_process([RIPPLE, "serve", "--port", str(port)], env, port, "/ready", log, timeout) as served:
        yield served


@contextmanager
def ripple_servers(envs: dict[str, dict[str, str]], index: Path, logs: Path) -> Iterator[dict[str, Served]]:
    """One `ripple serve` per entry of `envs`, all up at once (so their loads can be interleaved), each on
    its own copy of the index folder `index` (a local Qdrant folder serves one process)."""
    with ExitStack() as stack:
        up: dict[str, Served] = {}
        for name, env in envs.items():
            folder = index.with_name(f"{index.name}-{name}")
            shutil.copytree(index, folder)
            log = logs / f"ripple-{name}.log"
            up[name] = stack.enter_context(ripple_server({**env, "RIPPLE_QDRANT_PATH": str(folder)}, log))
        yield up


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by the process `pid` itself and by its live descendants
    (for a server with an in-process vLLM engine: the API process, then the engine core and worker)."""

    def used(proc: psutil.Process) -> float:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return float(times.user + times.system)

    proc = psutil.Process(pid)
    return used(proc), sum(used(child) for child in proc.children(recursive=True))


@dataclass
class StreamTiming:
    ttft: float
    """Seconds from sending to the first chunk that carries content."""
    total: float
    completion_tokens: int
    finish_reason: str | None


async def sse_lines(response: httpx.Response) -> AsyncIterator[str]:
    """The lines of a server-sent event stream, split where SSE splits them (CR, LF, CRLF) and nowhere
    else: httpx's `aiter_lines` also splits on U+2028, U+2029 and U+0085, which servers (Ripple, vLLM)
    send unescaped inside their JSON, so an answer quoting such a character would read as broken JSON."""
    rest = ""
    async for text in response.aiter_text():
        lines = (rest + text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        rest = lines.pop()
        for line in lines:
            yield line
    if rest:
        yield rest


async def stream_once(client: httpx.AsyncClient, base_url: str, body: dict[str, object]) -> StreamTiming:
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    ttft: float | None = None
    tokens, finish = 0, None
    done = False
    async with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in sse_lines(r):
            if line == "data: [DONE]":
                done = True
            if not line.startswith("data: ") or done:
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"the stream ended with an error event: {event['error']}")
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                if ttft is None and choice["delta"].get("content"):
                    ttft = time.perf_counter() - start
                finish = choice.get("finish_reason") or finish
    if not done or ttft is None:
        raise RuntimeError("the stream ended without " + ("data: [DONE]" if not done else "any text"))
    return StreamTiming(ttft, time.perf_counter() - start, tokens, finish)


def histogram_sums(base_url: str) -> dict[str, float]:
    """Sum and count of each histogram series of interest, keyed like `name{labels}_sum`."""
    wanted = (
        "ripple_retrieval_seconds",
        *(f'ripple_rails_seconds{{rail="{rail}"}}' for rail in ("input", "retrieval", "output")),
        "vllm:time_to_first_token_seconds",
    )
    out: dict[str, float] = {}
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        for name in wanted:
            metric, _, labels = name.partition("{")
            for suffix in ("_sum", "_count"):
                if line.startswith(metric + suffix) and (not labels or labels.rstrip("}") in line):
                    out[name + suffix] = out.get(name + suffix, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def histogram_count(name: str, before: dict[str, float], after: dict[str, float]) -> float:
    """Observations of histogram `name` between two `histogram_sums` readings."""
    return after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)


def histogram_mean(name: str, before: dict[str, float], after: dict[str, float]) -> float | None:
    """Mean observation (seconds) of histogram `name` between two readings; None when there was none."""
    count = histogram_count(name, before, after)
    return (after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)) / count if count else None


def parse_versus(items: list[str]) -> dict[str, str]:
    """`--versus KEY=VALUE` options as a dict of environment variables. Raises ValueError (with the
    message for the user) for an item without `=` or a RIPPLE_ key that names no setting: the server
    would ignore it, comparing a configuration with itself."""
    from runtime.settings import Settings

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--versus {item!r}: write KEY=VALUE")
        if key.startswith("RIPPLE_") and key.removeprefix("RIPPLE_").lower() not in Settings.model_fields:
            raise ValueError(f"--versus {key}: no such Ripple setting (see runtime/settings.py)")
        out[key] = value
    return out


def chat_model() -> str:
    """The chat model `ripple serve` runs with this environment's settings: a folder or a hub id."""
    from runtime.models import resolve_chat_model
    from runtime.settings import Settings

    settings = Settings()
    return resolve_chat_model(settings.model, settings.cache_dir)

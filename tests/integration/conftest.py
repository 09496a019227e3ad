"""One real Ripple server per test session: `ripple index` then `ripple serve` as subprocesses.

Everything is real: the vLLM CPU engine (one for the whole session), Qdrant in local mode, the
packaged all-MiniLM-L6-v2 embedder and the NeMo rails from guards/config.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

CORPUS = Path(__file__).parent.parent / "fixtures" / "corpus"
RIPPLE = str(Path(sys.executable).parent / "ripple")
START_TIMEOUT_S = 420


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ripple_env(qdrant: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIPPLE_")}
    env.update(
        {
            "RIPPLE_QDRANT_PATH": str(qdrant),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "2",
            **extra,
        }
    )
    return env


def stored(qdrant: Path) -> tuple[str | None, list[str], list[tuple[str, dict[str, Any]]]]:
    """What a Qdrant Edge folder holds, read with Qdrant Edge itself: the published version, every
    version, and the published version's (point id, payload) pairs."""
    import qdrant_edge as qe

    aliases = qdrant / "aliases.json"
    published = next(iter(json.loads(aliases.read_text()).values()), None) if aliases.exists() else None
    versions = sorted(p.name for p in qdrant.iterdir() if p.is_dir() and not p.name.startswith("."))
    points: list[tuple[str, dict[str, Any]]] = []
    if published is not None:
        shard = qe.EdgeShard.load(str(qdrant / published))
        offset: Any = None
        while True:
            records, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=512, with_payload=True))
            points += [(str(r.id), dict(r.payload or {})) for r in records]
            if offset is None:
                break
        shard.close()
    return published, versions, points


def run_ripple(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([RIPPLE, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"ripple {' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def metric(self, name: str) -> float:
        for line in httpx.get(f"{self.base_url}/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"metric {name} not found")

    def metric_total(self, name: str, label: str = "") -> float:
        """The sum of `name` over its label sets (those containing `label`, e.g. 'reason="waiting"'); 0 if none."""
        total = 0.0
        for line in httpx.get(f"{self.base_url}/metrics").text.splitlines():
            if (line.startswith(name + " ") or line.startswith(name + "{")) and label in line:
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("ripple")
    # Small admission bounds, so the tests of load handling reach them with a few requests; every other
    # test sends one request at a time.
    env = ripple_env(work / "qdrant", RIPPLE_MAX_CONCURRENT_REQUESTS="4", RIPPLE_MAX_WAITING_REQUESTS="2")
    run_ripple("index", str(CORPUS), env=env)
    port = free_port()
    log = work / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([RIPPLE, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"ripple serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"ripple serve not ready after {START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")
        time.sleep(1)
    yield Server(base, proc, log)
    proc.terminate()
    assert proc.wait(timeout=60) == 0, f"ripple serve did not exit cleanly:\n{log.read_text()[-3000:]}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `kills_engine` end the session's one engine, so they run after every other test."""
    items.sort(key=lambda item: item.get_closest_marker("kills_engine") is not None)

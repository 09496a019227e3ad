"""CoalescingEmbedder: overlapping small calls share one model call, each caller gets its own vectors."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from indexer.embedder import CoalescingEmbedder, HashingEmbedder


class Gated(HashingEmbedder):
    """A hashing embedder whose first call waits until `release` is set; records every call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.release = threading.Event()
        self.fail = False

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            assert self.release.wait(10)
        if self.fail:
            raise OSError("model gone")
        return super().embed(texts)


def queued(embedder: CoalescingEmbedder, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(embedder._queue) < n:
        assert time.monotonic() < deadline, "callers never queued"
        time.sleep(0.001)


def test_calls_that_arrive_while_the_model_runs_go_together_and_get_their_own_vectors() -> None:
    inner = Gated()
    embedder = CoalescingEmbedder(inner)
    texts = [[f"question {i} about qdrant"] if i % 2 else [f"sentence {i}.", f"another {i}."] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(embedder.embed, texts[0])
        while not inner.calls:
            time.sleep(0.001)
        rest = [pool.submit(embedder.embed, t) for t in texts[1:]]
        queued(embedder, 7)
        inner.release.set()
        results = [first.result(), *(f.result() for f in rest)]
    assert results == [HashingEmbedder().embed(t) for t in texts]
    assert len(inner.calls) == 2 and embedder.batches == 2  # the first alone, then the seven together
    assert sorted(inner.calls[1]) == sorted(t for group in texts[1:] for t in group)


def test_a_failed_batch_fails_each_of_its_callers_and_the_next_call_runs() -> None:
    inner = Gated()
    embedder = CoalescingEmbedder(inner)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(embedder.embed, ["a"])
        while not inner.calls:
            time.sleep(0.001)
        inner.fail = True
        later = [pool.submit(embedder.embed, [t]) for t in ("b", "c")]
        queued(embedder, 2)
        inner.release.set()
        for future in (first, *later):
            with pytest.raises(OSError, match="model gone"):
                future.result()
    inner.fail = False
    assert embedder.embed(["d"]) == HashingEmbedder().embed(["d"])


def test_large_calls_pass_straight_through_while_a_batch_runs() -> None:
    inner = Gated()
    embedder = CoalescingEmbedder(inner, max_texts=4)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(embedder.embed, ["query"])
        while not inner.calls:
            time.sleep(0.001)
        chunks = [f"chunk {i}" for i in range(5)]
        assert embedder.embed(chunks) == HashingEmbedder().embed(chunks)  # did not wait for the gated call
        inner.release.set()
        assert first.result() == HashingEmbedder().embed(["query"])
    assert embedder.batches == 1


def test_a_wrong_number_of_vectors_fails_the_batch_instead_of_shifting_vectors() -> None:
    class Short(HashingEmbedder):
        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            return super().embed(texts)[1:]

    with pytest.raises(RuntimeError, match="returned 0 vectors for 1 texts"):
        CoalescingEmbedder(Short()).embed(["a"])

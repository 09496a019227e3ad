"""The `Embedder` role: text in, unit vectors out. Real: sentence-transformers; fake: hashing.

The real embedder loads in `start()` (never in `__init__`), runs on CPU or CUDA, and batches.
Query and document encoding are the same call for all-MiniLM-L6-v2 (a symmetric model).
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
import threading
from collections.abc import Sequence
from typing import Any, Protocol


class Embedder(Protocol):
    @property
    def model_id(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """The longest input the model reads; longer text is truncated by the model."""
        ...

    def start(self) -> None: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the model's tokens in `text` (no special tokens)."""
        ...


class SentenceTransformerEmbedder:
    def __init__(self, model: str, *, name: str | None = None, device: str | None = None, batch_size: int = 64) -> None:
        self._model_path = model
        self._name = name or model
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def model_id(self) -> str:
        """The name stored with every vector (a hub id or the folder), so mixed models can be detected."""
        return self._name

    def start(self) -> None:
        if self._model is not None:
            return
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(self._model_path, device=self._device)
        # A tokenizer of its own for chunking: `encode` sets padding/truncation on the shared one, and the
        # indexer chunks in one thread while it embeds in another.
        self._tokenizer = copy.deepcopy(self._model.tokenizer)

    @property
    def dimension(self) -> int:
        dim = self._loaded().get_embedding_dimension()
        if dim is None:
            raise RuntimeError(f"{self._model_path} does not report an embedding dimension")
        return int(dim)

    @property
    def max_tokens(self) -> int:
        return int(self._loaded().max_seq_length)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        self._loaded()
        encoded = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        return [(int(a), int(b)) for a, b in encoded["offset_mapping"] if b > a]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = self._loaded().encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [list(map(float, v)) for v in vectors]

    def _loaded(self) -> Any:
        if self._model is None:
            raise RuntimeError("SentenceTransformerEmbedder.start() was not called")
        return self._model


class _Job:
    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.vectors: list[list[float]] | None = None
        self.error: BaseException | None = None


class CoalescingEmbedder:
    """Another embedder whose small concurrent `embed` calls share one model call.

    A server embeds one query per request and a few answer sentences per output check, each a call
    of its own from a worker thread. Under load those calls overlap and, each on its own, compete
    for the same cores. Here a call that finds the model idle runs at once (no added wait); calls
    that arrive while it runs queue up and go together as the next batch, run by the first of them.
    Calls of more than `max_texts` texts (indexing) pass straight through. Only for an embedder whose
    vector of a text does not depend on the other texts in its batch (not the int8 ONNX one, which
    scales its activations per batch).
    """

    def __init__(self, inner: Embedder, *, max_texts: int = 16) -> None:
        self.inner = inner
        self._max_texts = max_texts
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: list[_Job] = []
        self._running = False
        self.batches = 0
        """Model calls made for coalesced `embed` calls (for tests and benchmarks)."""

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    def start(self) -> None:
        self.inner.start()

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.inner.token_offsets(text)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if len(texts) > self._max_texts or not texts:
            return self.inner.embed(texts)
        job = _Job(list(texts))
        with self._lock:
            self._queue.append(job)
            while self._running and job.vectors is None and job.error is None:
                self._idle.wait()
            if job.vectors is None and job.error is None:  # the model is idle: run the queue, this job included
                batch, self._queue, self._running = self._queue, [], True
            else:
                batch = []
        if batch:
            self._run(batch)
        if job.error is not None:
            raise job.error
        assert job.vectors is not None
        return job.vectors

    def _run(self, batch: list[_Job]) -> None:
        try:
            texts = [t for job in batch for t in job.texts]
            vectors = self.inner.embed(texts)
            if len(vectors) != len(texts):
                raise RuntimeError(f"{self.inner.model_id} returned {len(vectors)} vectors for {len(texts)} texts")
            start = 0
            for job in batch:
                job.vectors, start = vectors[start : start + len(job.texts)], start + len(job.texts)
        except BaseException as exc:  # every caller of the batch sees the failure
            for job in batch:
                job.error = exc
        finally:
            with self._lock:
                self._running = False
                self.batches += 1
                self._idle.notify_all()


_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\w+|[^\w\s]")


class HashingEmbedder:
    """A fake for tests: bag of hashed words, so texts sharing words score high. No model."""

    def __init__(self, dimension: int = 64) -> None:
        self._dimension = dimension

    @property
    def model_id(self) -> str:
        return f"hashing-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return 512

    def start(self) -> None:
        pass

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _TOKEN.finditer(text)]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for text in texts:
            vec = [0.0] * self._dimension
            for word in _WORD.findall(text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
                vec[h % self._dimension] += 1.0
            norm = math.sqrt(sum(x * x for x in vec)) or 1.0
            out.append([x / norm for x in vec])
        return out

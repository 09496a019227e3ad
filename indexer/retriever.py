"""The `Retriever` role: a question in, the best passages out, by dense, sparse or hybrid search.

Dense embeds the query with the collection's embedding model; sparse encodes it into BM25 terms;
hybrid does both and lets Qdrant fuse the two rankings (reciprocal rank fusion). Filters on
payload keys are applied inside the Qdrant query, never after it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from indexer.embedder import Embedder
from indexer.sparse import Bm25Encoder
from indexer.store import Filter, Mode, SearchQuery, VectorStore
from indexer.types import Passage


@dataclass(frozen=True)
class RetrievalSettings:
    mode: Mode = "hybrid"
    candidates: int = 100
    rrf_k: int = 60
    dense_weight: float = 1.0


_INLINE_CHARS = 2048
"""A query up to this long is BM25-encoded on the event loop (microseconds); a longer one in a thread."""


class Retriever(Protocol):
    @property
    def ready(self) -> bool:
        """Whether its store is open and (for a Qdrant server) answering."""
        ...

    async def retrieve(
        self, query: str, limit: int, *, mode: Mode | None = None, filter: Filter | None = None
    ) -> list[Passage]: ...


class QdrantRetriever:
    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        sparse: Bm25Encoder | None = None,
        settings: RetrievalSettings | None = None,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.sparse = sparse or Bm25Encoder()
        self.settings = settings or RetrievalSettings()

    @property
    def ready(self) -> bool:
        return self.store.ready

    async def retrieve(
        self, query: str, limit: int, *, mode: Mode | None = None, filter: Filter | None = None
    ) -> list[Passage]:
        mode = mode or self.settings.mode
        dense = None
        if mode != "sparse":
            # Embedding is CPU work: off the event loop so streams keep flowing meanwhile.
            [dense] = await asyncio.to_thread(self.embedder.embed, [query])
        sparse = None
        if mode != "dense":
            # Microseconds for a question, in place; a long query off the loop too. In the embedding's thread
            # it held the GIL the event loop wanted while the ONNX embedder did not need it: the input rail,
            # which runs meanwhile, took 3 ms instead of 1.
            if len(query) > _INLINE_CHARS:
                sparse = await asyncio.to_thread(self.sparse.encode_query, query)
            else:
                sparse = self.sparse.encode_query(query)
        request = SearchQuery(
            limit=limit,
            mode=mode,
            dense=dense,
            sparse=sparse,
            filter=filter,
            candidates=max(self.settings.candidates, limit),
            rrf_k=self.settings.rrf_k,
            dense_weight=self.settings.dense_weight,
        )
        return await self.store.search(request)

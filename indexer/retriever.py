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
from indexer.sparse import Bm25Encoder, SparseVector
from indexer.store import Filter, Mode, SearchQuery, VectorStore
from indexer.types import Passage


@dataclass(frozen=True)
class RetrievalSettings:
    mode: Mode = "hybrid"
    candidates: int = 100
    rrf_k: int = 60
    dense_weight: float = 1.0


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

        def encode() -> tuple[list[float] | None, SparseVector | None]:
            return (
                self.embedder.embed([query])[0] if mode != "sparse" else None,
                self.sparse.encode_query(query) if mode != "dense" else None,
            )

        # CPU work that grows with the query: off the event loop so streams keep flowing meanwhile.
        dense, sparse = await asyncio.to_thread(encode)
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

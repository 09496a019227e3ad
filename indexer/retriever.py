"""The `Retriever` role: a question in, the best passages out (embed the query, search the store)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from indexer.embedder import Embedder
from indexer.store import VectorStore
from indexer.types import Passage


class Retriever(Protocol):
    async def retrieve(self, query: str, limit: int) -> list[Passage]: ...


class DenseRetriever:
    def __init__(self, embedder: Embedder, store: VectorStore) -> None:
        self.embedder = embedder
        self.store = store

    async def retrieve(self, query: str, limit: int) -> list[Passage]:
        # Embedding is CPU work: off the event loop so streams keep flowing meanwhile.
        [vector] = await asyncio.to_thread(self.embedder.embed, [query])
        return await self.store.search(vector, limit)

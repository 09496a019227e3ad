"""One contract, two stores: the in-memory fake and real Qdrant (local mode, no server needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from indexer.chunker import chunk_document
from indexer.embedder import HashingEmbedder
from indexer.store import InMemoryStore, QdrantStore, StoreError, VectorStore

EMBED = HashingEmbedder()


@pytest.fixture(params=["memory", "qdrant"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    s: VectorStore = InMemoryStore() if request.param == "memory" else QdrantStore("test", path=str(tmp_path / "q"))
    await s.start(EMBED.dimension)
    yield s
    await s.close()


async def add(store: VectorStore, doc_id: str, text: str) -> None:
    chunks = chunk_document(doc_id, f"{doc_id}.md", text)
    await store.upsert(chunks, EMBED.embed([c.text for c in chunks]), {"tenant": "public"})


async def test_search_ranks_by_similarity_and_returns_payload(store: VectorStore) -> None:
    await add(store, "a", "apples and pears grow in the orchard")
    await add(store, "b", "the database replicates its write-ahead log")
    hits = await store.search(EMBED.embed(["write-ahead log replication"])[0], 2)
    assert [h.doc_id for h in hits] == ["b", "a"]
    assert hits[0].score > hits[1].score
    assert hits[0].source == "b.md" and hits[0].text.startswith("the database")
    assert hits[0].payload["tenant"] == "public" and hits[0].payload["indexed_at"]


async def test_document_hash_and_delete(store: VectorStore) -> None:
    await add(store, "a", "first version")
    await add(store, "b", "other document")
    assert await store.document_hash("a") == chunk_document("a", "a.md", "first version")[0].content_hash
    assert await store.document_hash("missing") is None
    await store.delete_document("a")
    assert await store.count() == 1
    assert await store.document_hash("a") is None


async def test_upsert_is_idempotent(store: VectorStore) -> None:
    await add(store, "a", "same text twice")
    await add(store, "a", "same text twice")
    assert await store.count() == 1


async def test_qdrant_refuses_a_collection_of_another_dimension(tmp_path: Path) -> None:
    s = QdrantStore("test", path=str(tmp_path / "q"))
    await s.start(64)
    await s.close()
    other = QdrantStore("test", path=str(tmp_path / "q"))
    with pytest.raises(StoreError, match="RIPPLE_COLLECTION"):
        await other.start(384)
    await other.close()

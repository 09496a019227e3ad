"""One contract, three stores: the in-memory fake and real Qdrant, both in local mode and as Qdrant Edge
(no server needed for either)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from indexer.chunker import ChunkerSettings, chunk_document
from indexer.edge_store import EdgeStore
from indexer.embedder import HashingEmbedder
from indexer.sparse import Bm25Encoder, SparseVector
from indexer.store import InMemoryStore, QdrantStore, SearchQuery, StoreError, VectorStore, version_name
from indexer.types import ParsedDocument, Section

EMBED = HashingEmbedder()
BM25 = Bm25Encoder()
V1 = version_name("docs", "model-a", EMBED.dimension, "t200o32v2")
V2 = version_name("docs", "model-b", EMBED.dimension, "t200o32v2")


def make_store(kind: str, folder: Path) -> VectorStore:
    if kind == "memory":
        return InMemoryStore("docs")
    if kind == "edge":
        return EdgeStore("docs", path=str(folder))
    return QdrantStore("docs", path=str(folder))


@pytest.fixture(params=["memory", "qdrant", "edge"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    s = make_store(request.param, tmp_path / "q")
    await s.start()
    await s.create_version(V1, EMBED.dimension)
    yield s
    await s.close()


async def add(store: VectorStore, doc_id: str, text: str, version: str = V1, tenant: str = "public") -> None:
    doc = ParsedDocument("text", (Section(text),))
    chunks = chunk_document(doc_id, f"{doc_id}.md", doc, EMBED.token_offsets, ChunkerSettings())
    sparse = [BM25.encode_document(c.text) for c in chunks]
    await store.upsert(version, chunks, EMBED.embed([c.text for c in chunks]), sparse, {"tenant": tenant})


def query(text: str, mode: str = "dense", limit: int = 5, **kw: object) -> SearchQuery:
    return SearchQuery(limit, mode, dense=EMBED.embed([text])[0], sparse=BM25.encode_query(text), **kw)  # type: ignore[arg-type]


async def test_nothing_is_searchable_before_publishing(store: VectorStore) -> None:
    await add(store, "a", "apples and pears")
    assert await store.published() is None
    assert await store.search(query("apples")) == []
    assert await store.sample() is None


async def test_search_goes_through_the_published_alias(store: VectorStore) -> None:
    await add(store, "a", "apples and pears grow in the orchard")
    await add(store, "b", "the database replicates its write-ahead log")
    await store.publish(V1)
    hits = await store.search(query("write-ahead log replication", limit=2))
    assert [h.doc_id for h in hits] == ["b", "a"] and hits[0].score > hits[1].score
    assert hits[0].source == "b.md" and hits[0].payload["tenant"] == "public" and hits[0].payload["indexed_at"]
    assert (await store.sample() or {})["doc_id"] in {"a", "b"}


async def test_publishing_another_version_swaps_atomically_and_old_stays_until_dropped(store: VectorStore) -> None:
    await add(store, "a", "old model text")
    await store.publish(V1)
    await store.create_version(V2, EMBED.dimension)
    await add(store, "b", "new model text", version=V2)
    await store.publish(V2)
    assert await store.published() == V2
    assert [h.doc_id for h in await store.search(query("text"))] == ["b"]
    assert await store.versions() == sorted([V1, V2])
    with pytest.raises(StoreError, match="published"):
        await store.drop(V2)
    await store.drop(V1)
    assert await store.versions() == [V2]


async def test_state_counts_points_per_document_and_hash(store: VectorStore) -> None:
    await add(store, "a", "first version")
    await add(store, "b", "other document")
    state, sources = await store.state(V1)
    assert set(state) == {"a", "b"} and sources["a"] == "a.md"
    assert list(state["a"].values()) == [1]
    one, one_source = await store.state(V1, "b")
    assert one == {"b": state["b"]} and one_source == {"b": "b.md"}, "one document's state, by a filter"
    assert await store.state(V1, "missing") == ({}, {})


async def test_delete_keeps_only_the_named_hash(store: VectorStore) -> None:
    await add(store, "a", "first version")
    await add(store, "a", "second version")  # a crash between upsert and delete leaves both
    state, _ = await store.state(V1)
    assert len(state["a"]) == 2
    keep = chunk_document(
        "a", "a.md", ParsedDocument("text", (Section("second version"),)), EMBED.token_offsets, ChunkerSettings()
    )[0]
    await store.delete_document(V1, "a", keep_hash=keep.content_hash)
    state, _ = await store.state(V1)
    assert state["a"] == {keep.content_hash: 1}
    await store.delete_document(V1, "a")
    assert "a" not in (await store.state(V1))[0]


async def test_sparse_search_ranks_by_bm25_terms(store: VectorStore) -> None:
    await add(store, "a", "the quick brown fox jumps")
    await add(store, "b", "replication of the write-ahead log across replicas")
    await add(store, "c", "a log cabin in the woods")
    await store.publish(V1)
    hits = await store.search(query("replicating logs", "sparse"))
    assert [h.doc_id for h in hits] == ["b", "c"], "stemmed terms match; documents without any term are not returned"
    assert hits[0].score > hits[1].score > 0


async def test_hybrid_fuses_both_rankings(store: VectorStore) -> None:
    await add(store, "a", "zebra zebra zebra")
    await add(store, "b", "replication of the write-ahead log")
    await add(store, "c", "unrelated words entirely")
    await store.publish(V1)
    hits = await store.search(query("write-ahead log replication", "hybrid", limit=3))
    assert hits[0].doc_id == "b", "first in both rankings, first after fusion"
    assert {h.doc_id for h in hits} == {"a", "b", "c"}, "dense brings every document to the fusion"


async def test_the_dense_weight_tips_the_fusion_toward_either_ranking(store: VectorStore) -> None:
    await add(store, "a", "orbit relay orbit relay orbit relay")
    await add(store, "b", "the quartz quartz clock")
    await store.publish(V1)
    # Dense ranks a then b; sparse finds only b. With k=1, a dense side weighing 5 keeps a first and one
    # weighing 0.2 lets the sparse side put b first.
    dense, sparse = EMBED.embed(["orbit relay"])[0], BM25.encode_query("quartz")
    for weight, first in ((5.0, "a"), (0.2, "b")):
        hits = await store.search(SearchQuery(2, "hybrid", dense=dense, sparse=sparse, rrf_k=1, dense_weight=weight))
        assert hits[0].doc_id == first, f"dense weight {weight}"


async def test_hybrid_orders_equal_scores_by_point_id_and_cuts_a_tie_the_same_way_each_time(store: VectorStore) -> None:
    """Qdrant's RRF (server and Edge) sorts fused points by score alone, out of a hash map seeded anew for
    each query: equal scores came back in another order each time, and which of them made the limit changed.
    Dense ranks these points 0..11 and sparse 11..0, so point i ties with point 11 - i; the last pair is cut."""
    n = 12
    docs = [ParsedDocument("text", (Section(f"point {i}"),)) for i in range(n)]
    chunks = [
        chunk_document(f"d{i}", f"d{i}.md", d, EMBED.token_offsets, ChunkerSettings())[0] for i, d in enumerate(docs)
    ]
    dense = [[math.cos(i / n), math.sin(i / n)] + [0.0] * (EMBED.dimension - 2) for i in range(n)]
    sparse = [SparseVector([7], [float(i + 1)]) for i in range(n)]
    await store.upsert(V1, chunks, dense, sparse, {"tenant": "public"})
    await store.publish(V1)
    ask = SearchQuery(n - 1, "hybrid", dense=dense[0], sparse=SparseVector([7], [1.0]))
    pairs = [sorted((chunks[i].id, chunks[n - 1 - i].id)) for i in range(n // 2)]  # best pair first
    expected = [chunk_id for pair in pairs for chunk_id in pair][: n - 1]
    for _ in range(5):
        hits = await store.search(ask)
        assert [h.chunk_id for h in hits] == expected
        assert all(hits[j].score == hits[j + 1].score for j in range(0, n - 2, 2)), "the pairs do tie"


async def test_filters_apply_inside_the_query(store: VectorStore) -> None:
    await add(store, "a", "shared words about logs", tenant="acme")
    await add(store, "b", "shared words about logs", tenant="globex")
    await add(store, "c", "shared words about logs too", tenant="initech")
    await store.publish(V1)
    for mode in ("dense", "sparse", "hybrid"):
        only = await store.search(query("shared words about logs", mode, filter={"tenant": "acme"}))
        assert [h.doc_id for h in only] == ["a"], mode
        two = await store.search(query("shared words about logs", mode, filter={"tenant": ["acme", "globex"]}))
        assert sorted(h.doc_id for h in two) == ["a", "b"], mode
        assert await store.search(query("shared words", mode, filter={"source": "nope.md"})) == []


async def test_filters_match_integers_by_type_and_nested_fields_by_path(store: VectorStore) -> None:
    """The fake matched "0" to 0 and True to 1, and read no dotted path, where Qdrant (local, server, Edge)
    compares types and reads "chunker.max_tokens" as a nested field: the three stores must agree."""
    doc = ParsedDocument("text", (Section("integers and nested payload fields"),))
    chunks = chunk_document("a", "a.md", doc, EMBED.token_offsets, ChunkerSettings())
    extra = {"tenant": "acme", "chunker": {"max_tokens": 200}}
    vectors, sparse = EMBED.embed([c.text for c in chunks]), [BM25.encode_document(c.text) for c in chunks]
    await store.upsert(V1, chunks, vectors, sparse, extra)
    await store.publish(V1)
    for mode in ("dense", "sparse", "hybrid"):
        for spec, found in (
            ({"start": 0}, ["a"]),
            ({"start": [0, 5]}, ["a"]),
            ({"start": "0"}, []),
            ({"chunker.max_tokens": 200}, ["a"]),
            ({"chunker.max_tokens": 150}, []),
        ):
            hits = await store.search(query("integers nested payload", mode, filter=spec))  # type: ignore[arg-type]
            assert [h.doc_id for h in hits] == found, (mode, spec)


async def test_upsert_is_idempotent(store: VectorStore) -> None:
    await add(store, "a", "same text twice")
    await add(store, "a", "same text twice")
    assert await store.count(V1) == 1


async def test_qdrant_refuses_a_version_of_another_dimension(tmp_path: Path) -> None:
    s = QdrantStore("docs", path=str(tmp_path / "q"))
    await s.start()
    await s.create_version(V1, 64)
    with pytest.raises(StoreError, match="dimensional"):
        await s.create_version(V1, 384)
    await s.close()


@pytest.mark.parametrize("kind", ["qdrant", "edge"])
async def test_a_second_process_on_the_same_folder_is_told_what_to_do(tmp_path: Path, kind: str) -> None:
    first = make_store(kind, tmp_path / "q")
    await first.start()
    import subprocess
    import sys

    code = (
        "import asyncio; from indexer.store import StoreError; from tests.unit.test_store_contract import make_store\n"
        f"s = make_store({kind!r}, __import__('pathlib').Path({str(tmp_path / 'q')!r}))\n"
        "try:\n    asyncio.run(s.start())\nexcept StoreError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    await first.close()
    assert "RIPPLE_QDRANT_URL" in out


async def test_edge_keeps_everything_across_a_reopen(tmp_path: Path) -> None:
    s = EdgeStore("docs", path=str(tmp_path / "q"))
    await s.start()
    await s.create_version(V1, EMBED.dimension)
    await add(s, "a", "replication of the write-ahead log")
    await s.publish(V1)
    await s.close()
    again = EdgeStore("docs", path=str(tmp_path / "q"))
    await again.start()
    assert await again.published() == V1 and await again.count() == 1
    assert [h.doc_id for h in await again.search(query("write-ahead log", "hybrid"))] == ["a"]
    await again.close()


async def test_edge_refuses_a_local_mode_folder_and_says_what_to_do(tmp_path: Path) -> None:
    local = QdrantStore("docs", path=str(tmp_path / "q"))
    await local.start()
    await local.create_version(V1, EMBED.dimension)
    await local.close()
    with pytest.raises(StoreError, match="RIPPLE_QDRANT_ENGINE=local"):
        await EdgeStore("docs", path=str(tmp_path / "q")).start()


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
async def test_hits_carry_their_stored_dense_vector(store: VectorStore, mode: str) -> None:
    text = "the database replicates its write-ahead log"
    await add(store, "b", text)
    await store.publish(V1)
    [hit] = await store.search(query("write-ahead log", mode=mode, limit=1))
    assert hit.vector is not None
    assert hit.vector == pytest.approx(EMBED.embed([hit.text])[0], abs=1e-6)

"""`Indexer` on real local Qdrant with the hashing embedder: incremental runs, versions, bad files."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from indexer.chunker import ChunkerSettings, chunk_document
from indexer.edge_store import EdgeStore
from indexer.embedder import HashingEmbedder
from indexer.pipeline import Indexer
from indexer.store import InMemoryStore, QdrantStore, SearchQuery, StoreError, VectorStore
from indexer.types import ParsedDocument, Section


@pytest.fixture(params=["local", "edge"])
async def store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[VectorStore]:
    s: VectorStore = (
        EdgeStore("docs", path=str(tmp_path / "q"))
        if request.param == "edge"
        else QdrantStore("docs", path=str(tmp_path / "q"))
    )
    await s.start()
    yield s
    await s.close()


@pytest.fixture
def docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\n" + "alpha beta gamma. " * 300)
    (folder / "b.txt").write_text("bravo")
    return folder


async def test_unchanged_files_embed_nothing_and_changed_files_replace_their_chunks(
    docs: Path, store: VectorStore
) -> None:
    indexer = Indexer(HashingEmbedder(), store, batch_size=16)
    first = await indexer.run([docs])
    assert first.added == ["docs/a.md", "docs/b.txt"] and first.published_now and first.chunks_embedded > 2
    total = await store.count()
    second = await indexer.run([docs])
    assert second.chunks_embedded == 0 and second.unchanged == ["docs/a.md", "docs/b.txt"] and not second.published_now
    (docs / "b.txt").write_text("bravo changed")
    third = await indexer.run([docs])
    assert third.updated == ["docs/b.txt"] and third.chunks_embedded == 1
    assert await store.count() == total, "b.txt's old chunk was replaced, not kept beside the new one"


async def test_prune_removes_documents_whose_files_are_gone_only_under_the_given_paths(
    docs: Path, store: VectorStore, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.md").write_text("charlie")
    indexer = Indexer(HashingEmbedder(), store)
    await indexer.run([docs, other])
    (docs / "b.txt").unlink()
    kept = await indexer.run([docs])
    assert kept.deleted == [], "without --prune nothing is deleted"
    pruned = await indexer.run([docs], prune=True)
    assert pruned.deleted == ["docs/b.txt"]
    _, sources = await store.state(indexer.version)
    assert sorted(sources.values()) == ["docs/a.md", "other/c.md"]


def test_a_source_is_named_the_same_however_its_path_was_written(docs: Path) -> None:
    from indexer.pipeline import source_name

    here = Path.cwd().name
    assert source_name(Path(f"../{here}/docs/a.md")) == source_name(Path("docs/./a.md")) == "docs/a.md"


async def test_prune_of_the_working_directory_prunes_but_keeps_hidden_folders(
    docs: Path, store: VectorStore, tmp_path: Path
) -> None:
    """`ripple index --prune .`, the most common call, pruned nothing (no source starts with "./"); it
    must not prune what `walk` never visits either, such as uploads kept in `.ripple/uploads`."""
    uploads = tmp_path / ".ripple" / "uploads"
    uploads.mkdir(parents=True)
    (uploads / "up.md").write_text("uploaded through the API")
    indexer = Indexer(HashingEmbedder(), store)
    await indexer.run([Path("."), uploads])
    (docs / "b.txt").unlink()
    pruned = await indexer.run([Path(".")], prune=True)
    assert pruned.deleted == ["docs/b.txt"]
    _, sources = await store.state(indexer.version)
    assert sorted(sources.values()) == [".ripple/uploads/up.md", "docs/a.md"]


async def test_a_document_uploaded_while_a_new_version_is_built_is_in_it_when_published(
    docs: Path, store: VectorStore, tmp_path: Path
) -> None:
    """An upload indexed into the published version during a rebuild (through the API, to a shared Qdrant
    server) was left out of the new version, and publishing it dropped the document."""
    old = Indexer(HashingEmbedder(), store, ChunkerSettings(max_tokens=200))
    await old.run([docs])
    upload = tmp_path / "uploads" / "late.md"
    upload.parent.mkdir()
    upload.write_text("arrived during the rebuild")
    new = Indexer(HashingEmbedder(), store, ChunkerSettings(max_tokens=150))
    ingest, uploaded = new._ingest, []

    async def ingest_then_an_upload_lands(*args: Any, **kwargs: Any) -> None:
        await ingest(*args, **kwargs)
        if not uploaded:
            uploaded.append(await old.run([upload]))

    new._ingest = ingest_then_an_upload_lands  # type: ignore[method-assign]
    summary = await new.run([docs])
    assert summary.published_now and "uploads/late.md" in summary.added
    _, sources = await store.state(new.version)
    assert sorted(sources.values()) == ["docs/a.md", "docs/b.txt", "uploads/late.md"]


async def test_a_new_chunker_builds_a_new_version_and_swaps_only_when_complete(docs: Path, store: VectorStore) -> None:
    old = Indexer(HashingEmbedder(), store, ChunkerSettings(max_tokens=200))
    await old.run([docs])
    new = Indexer(HashingEmbedder(), store, ChunkerSettings(max_tokens=64, overlap_tokens=8))
    assert new.version != old.version
    summary = await new.run([docs / "a.md"])
    assert summary.published_now and await store.published() == new.version
    _, sources = await store.state(new.version)
    assert sorted(sources.values()) == ["docs/a.md", "docs/b.txt"], "the new version carries the old one's documents"
    assert {
        h.payload["chunker"]["max_tokens"]
        for h in await store.search(SearchQuery(50, "dense", dense=HashingEmbedder().embed(["alpha"])[0]))
    } == {64}
    assert await store.versions() == sorted([old.version, new.version])
    assert await new.gc() == [old.version]
    assert await store.versions() == [new.version]


async def test_a_crash_between_upsert_and_delete_is_repaired_without_embedding(docs: Path, store: VectorStore) -> None:
    embedder = HashingEmbedder()
    indexer = Indexer(embedder, store)
    await indexer.run([docs])
    (docs / "b.txt").write_text("bravo two")
    await indexer.run([docs])
    state, sources = await store.state(indexer.version)
    doc_id = next(d for d, s in sources.items() if s == "docs/b.txt")
    # What a kill -9 between the upsert of the new chunks and the delete of the old ones leaves:
    stale = chunk_document(
        doc_id, "docs/b.txt", ParsedDocument("text", (Section("bravo"),)), embedder.token_offsets, indexer.chunker
    )
    await store.upsert(indexer.version, stale, embedder.embed(["bravo"]), [indexer.sparse.encode_document("bravo")], {})
    assert len((await store.state(indexer.version))[0][doc_id]) == 2
    repaired = await indexer.run([docs])
    assert repaired.updated == ["docs/b.txt"] and repaired.chunks_embedded == 0
    assert (await store.state(indexer.version))[0][doc_id] == state[doc_id]


async def test_bad_files_are_reported_one_by_one_and_the_run_goes_on(
    docs: Path, store: VectorStore, tmp_path: Path
) -> None:
    (docs / "empty.md").write_text("  \n")
    (docs / "binary.txt").write_bytes(b"\x00\x01\x02abc")
    (docs / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with (docs / "huge.txt").open("wb") as f:
        f.truncate(200 * 1024 * 1024)  # sparse: 200 MB on paper, nothing on disk
    (docs / "loop.md").symlink_to(docs / "loop2.md")
    (docs / "loop2.md").symlink_to(docs / "loop.md")
    (docs / "sub").mkdir()
    (docs / "sub" / "up").symlink_to(docs)  # a folder loop: not followed
    (docs / "image.png").write_bytes(b"\x89PNG")  # unsupported suffix: not even tried
    summary = await Indexer(HashingEmbedder(), store).run([docs])
    errors = {Path(f["source"]).name: f["error"] for f in summary.failed}
    assert set(errors) == {"empty.md", "binary.txt", "latin1.txt", "huge.txt", "loop.md", "loop2.md"}
    assert "empty" in errors["empty.md"] and "MiB" in errors["huge.txt"]
    assert summary.added == ["docs/a.md", "docs/b.txt"]
    assert summary.as_dict().keys() >= {"added", "updated", "unchanged", "deleted", "failed", "chunks_embedded"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file, so an unreadable file cannot be made here")
async def test_an_unreadable_file_is_a_permission_error_in_the_summary(docs: Path, store: VectorStore) -> None:
    (docs / "secret.md").write_text("x")
    (docs / "secret.md").chmod(0)
    summary = await Indexer(HashingEmbedder(), store).run([docs])
    assert any("permission" in f["error"] for f in summary.failed)


async def test_chunks_longer_than_the_model_reads_are_refused(docs: Path, store: VectorStore) -> None:
    with pytest.raises(ValueError, match="RIPPLE_CHUNK_MAX_TOKENS"):
        await Indexer(HashingEmbedder(), store, ChunkerSettings(max_tokens=600, overlap_tokens=0)).run([docs])


async def test_a_missing_path_is_an_error(tmp_path: Path, store: VectorStore) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        await Indexer(HashingEmbedder(), store).run([tmp_path / "nope"])


class _RefusingStore(InMemoryStore):
    async def upsert(self, *args: object, **kwargs: object) -> None:
        raise StoreError("disk full")


async def test_a_failing_stage_ends_the_run_with_its_exception_instead_of_hanging(docs: Path) -> None:
    for i in range(40):  # more than one pool, so the planner is waiting on a full queue when the upsert fails
        (docs / f"n{i}.txt").write_text(f"note {i} " * 50)
    store = _RefusingStore("docs")
    await store.start()
    with pytest.raises(StoreError, match="disk full"):
        await asyncio.wait_for(Indexer(HashingEmbedder(), store, batch_size=2).run([docs]), timeout=30)
    assert await store.published() is None, "nothing is published after a failed run"


async def test_progress_counts_a_file_when_its_chunks_are_stored_not_when_it_is_parsed(docs: Path) -> None:
    """Parsing runs ahead of the embedder by a whole pool of chunks: counted at parse time, a small corpus
    showed 100% of its files before one chunk was embedded."""
    (docs / "b.txt").unlink()
    for i in range(5):
        (docs / f"n{i}.md").write_text(f"# N{i}\n\n" + f"note {i} text. " * 200)
    calls: list[tuple[int, int]] = []
    store = InMemoryStore("docs")
    await store.start()
    summary = await Indexer(HashingEmbedder(), store, batch_size=4).run([docs], progress=lambda *c: calls.append(c))
    files = len(summary.added)
    assert files == 6 and calls[-1] == (files, summary.chunks_embedded)
    assert [f for f, _ in calls] == sorted(f for f, _ in calls), "files finished never go back"
    first_all = next(chunks for f, chunks in calls if f == files)
    assert first_all == summary.chunks_embedded, f"every file counted after {first_all} chunks"

"""`index_paths` on real local Qdrant with the hashing embedder: incremental and per-file errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from indexer.embedder import HashingEmbedder
from indexer.pipeline import index_paths
from indexer.store import QdrantStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[QdrantStore]:
    s = QdrantStore("docs", path=str(tmp_path / "q"))
    await s.start(64)
    yield s
    await s.close()


async def test_unchanged_files_embed_nothing_and_changed_files_replace_chunks(
    tmp_path: Path, store: QdrantStore
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nalpha " * 200)
    (docs / "b.txt").write_text("bravo")
    first = await index_paths([docs], HashingEmbedder(), store)
    assert len(first.added) == 2 and first.chunks_embedded > 2
    total = await store.count()
    second = await index_paths([docs], HashingEmbedder(), store)
    assert second.chunks_embedded == 0 and len(second.unchanged) == 2
    (docs / "b.txt").write_text("bravo changed")
    third = await index_paths([docs], HashingEmbedder(), store)
    assert third.updated == [s for s in first.added if s.endswith("b.txt")] and third.chunks_embedded == 1
    assert await store.count() == total, "old chunks of b.txt were replaced, not added to"


async def test_bad_files_are_reported_and_the_run_goes_on(tmp_path: Path, store: QdrantStore) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "empty.md").write_text("  \n")
    (docs / "binary.txt").write_bytes(b"\x00\x01\x02abc")
    (docs / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (docs / "good.md").write_text("fine text")
    (docs / "image.png").write_bytes(b"\x89PNG")  # not a supported suffix: not even tried
    summary = await index_paths([docs], HashingEmbedder(), store)
    errors = {Path(f["source"]).name: f["error"] for f in summary.failed}
    assert set(errors) == {"empty.md", "binary.txt", "latin1.txt"}
    assert "empty" in errors["empty.md"] and "binary" in errors["binary.txt"] and "UTF-8" in errors["latin1.txt"]
    assert [Path(s).name for s in summary.added] == ["good.md"]
    assert summary.as_dict().keys() >= {"added", "updated", "unchanged", "deleted", "failed", "chunks_embedded"}


async def test_a_missing_path_is_an_error(tmp_path: Path, store: QdrantStore) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        await index_paths([tmp_path / "nope"], HashingEmbedder(), store)

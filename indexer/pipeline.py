"""Index files into a vector store: walk, read, chunk, embed, replace each changed document.

A document whose content hash matches what is stored is skipped (nothing embedded). A changed
document is embedded first, then its old chunks are deleted and the new ones upserted, so a failed
embed leaves the old version searchable. Each bad file becomes one line in the summary's `failed`
list and the run goes on. Markdown and plain text only for now; other formats come later.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from indexer.chunker import NAMESPACE, ChunkerSettings, chunk_document
from indexer.embedder import Embedder
from indexer.store import VectorStore

logger = logging.getLogger(__name__)

SUFFIXES = {".md", ".markdown", ".txt", ".rst"}
MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass
class IndexSummary:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    chunks_embedded: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": [],
            "failed": self.failed,
            "chunks_embedded": self.chunks_embedded,
        }


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files under `paths` with a supported suffix, in a stable order (symlinked folders not followed)."""
    for root in paths:
        if root.is_file():
            yield root
            continue
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if Path(name).suffix.lower() in SUFFIXES:
                    yield Path(dirpath) / name


def source_name(path: Path) -> str:
    """The path users see in citations: relative to the working directory when under it."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def read_text(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"file is {size // (1024 * 1024)} MB, over the {MAX_FILE_BYTES // (1024 * 1024)} MB limit")
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise ValueError("looks binary (NUL bytes); only Markdown and text are indexed")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not text.strip():
        raise ValueError("file is empty")
    return text


async def index_paths(
    paths: Iterable[Path],
    embedder: Embedder,
    store: VectorStore,
    *,
    chunker: ChunkerSettings | None = None,
    tenant: str = "public",
) -> IndexSummary:
    chunker = chunker or ChunkerSettings()
    summary = IndexSummary()
    extra = {
        "tenant": tenant,
        "embedding_model": embedder.model_id,
        "chunker": {"max_chars": chunker.max_chars, "overlap": chunker.overlap},
    }
    for path in iter_files(paths):
        source = source_name(path)
        doc_id = str(uuid.uuid5(NAMESPACE, source))
        try:
            text = read_text(path)
            chunks = chunk_document(doc_id, source, text, chunker)
            stored = await store.document_hash(doc_id)
            if stored == chunks[0].content_hash:
                summary.unchanged.append(source)
                continue
            vectors = await asyncio.to_thread(embedder.embed, [c.text for c in chunks])
            if stored is not None:
                await store.delete_document(doc_id)
            await store.upsert(chunks, vectors, extra)
        except (OSError, ValueError) as exc:
            logger.warning("skipped %s: %s", source, exc)
            summary.failed.append({"source": source, "error": str(exc)})
            continue
        summary.chunks_embedded += len(chunks)
        (summary.updated if stored is not None else summary.added).append(source)
    return summary

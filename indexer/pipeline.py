"""`Indexer`: files in, a complete and published version of the collection out, incrementally.

Per run: pick the version for (model, chunker) (`indexer.store.version_name`), read what it holds,
then stream files through three overlapping stages — parse + chunk (a thread), embed in large
batches (a thread; torch releases the GIL), upsert (waiting for Qdrant's acknowledgement) — and
finally publish the version under the alias if it is new.

Crash safety comes from idempotence, not from transactions: chunk ids are deterministic, a
document's new chunks are upserted before its stale ones are deleted, and a document counts as
unchanged only when the version holds exactly its current chunks. Killed at any moment and run
again, the result equals an uninterrupted run. A document whose file fails is reported in
`failed` with the reason and the run goes on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.chunker import NAMESPACE, ChunkerSettings, chunk_document
from indexer.embedder import Embedder
from indexer.loaders import SUFFIXES, ParseError, parse_file
from indexer.sparse import Bm25Encoder, SparseVector
from indexer.store import DocState, StoreError, VectorStore, version_name
from indexer.types import Chunk, ParsedDocument

logger = logging.getLogger(__name__)

Parsed = tuple[str, list[Chunk], list[SparseVector]]
Item = tuple[str, Callable[[], ParsedDocument]]
"""A document to index: its source name and how to load it."""
POOL_BATCHES = 16
Progress = Callable[[int, int], None]
"""Called as work ends with (files finished, chunks embedded so far). A file is finished when its chunks are
stored, or when it was found unchanged or failed: not when it was parsed, which runs ahead of the embedder
by up to a pool of chunks (a small corpus would show 100% before any chunk was embedded)."""


@dataclass
class IndexSummary:
    collection: str
    version: str
    published_now: bool = False
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    chunks_embedded: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def source_name(path: Path) -> str:
    """The path users see in citations: relative to the working directory when under it, with `..` parts
    resolved (symbolic links are not: a link's path is its own source)."""
    resolved = Path(os.path.normpath(path.absolute()))
    try:
        return resolved.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return resolved.as_posix()


def doc_id_for(source: str) -> str:
    return str(uuid.uuid5(NAMESPACE, source))


def walk(paths: Iterable[Path], failed: list[dict[str, str]]) -> Iterator[Path]:
    """Supported files under `paths` in a stable order. Symlinked folders are not followed (no loops);
    unreadable folders are reported in `failed`."""
    for root in paths:
        if root.is_file() or (root.is_symlink() and not root.is_dir()):
            yield root
            continue
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")

        def unreadable(err: OSError, root: Path = root) -> None:
            failed.append(
                {"source": source_name(Path(err.filename or root)), "error": f"cannot read folder: {err.strerror}"}
            )

        for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if Path(name).suffix.lower() in SUFFIXES and not name.startswith("."):
                    yield Path(dirpath) / name


def _walked_into(source: str, root: str) -> bool:
    """Whether walking `root` (a source name, "." for the working directory) would reach `source`: inside
    it, and through no hidden folder or file, which `walk` skips (so `--prune .` keeps uploads kept in
    `.ripple/uploads`)."""
    if source == root:
        return True
    prefix = "" if root == "." else root.rstrip("/") + "/"
    if not source.startswith(prefix) or (not prefix and source.startswith("/")):
        return False
    return not any(part.startswith(".") for part in source[len(prefix) :].split("/"))


@dataclass
class _Doc:
    source: str
    doc_id: str
    chunks: list[Chunk]
    new: bool
    remaining: int = 0


class Indexer:
    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        chunker: ChunkerSettings | None = None,
        *,
        sparse: Bm25Encoder | None = None,
        tenant: str = "public",
        batch_size: int = 256,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.chunker = chunker or ChunkerSettings()
        self.sparse = sparse or Bm25Encoder()
        self.tenant = tenant
        self.batch_size = batch_size

    @property
    def version(self) -> str:
        return version_name(
            self.store.alias,
            self.embedder.model_id,
            self.embedder.dimension,
            self.chunker.fingerprint,
            self.sparse.name,
        )

    def check(self) -> None:
        if self.chunker.max_tokens > self.embedder.max_tokens - 2:
            raise ValueError(
                f"chunks of {self.chunker.max_tokens} tokens are longer than {self.embedder.model_id} reads "
                f"({self.embedder.max_tokens - 2} without special tokens): lower RIPPLE_CHUNK_MAX_TOKENS"
            )

    def _extra(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "embedding_model": self.embedder.model_id, "chunker": self.chunker.as_dict()}

    def chunk(self, source: str, doc: ParsedDocument) -> list[Chunk]:
        """The chunks this indexer makes of `doc` under `source`: the same every time (ids included)."""
        return chunk_document(doc_id_for(source), source, doc, self.embedder.token_offsets, self.chunker)

    def _parse(self, item: Item) -> Parsed:
        source, load = item
        chunks = self.chunk(source, load())
        return source, chunks, [self.sparse.encode_document(c.text) for c in chunks]

    async def _begin(self) -> tuple[IndexSummary, str | None, DocState, dict[str, str]]:
        """Open this run's version; return its summary, the published version and what the version holds."""
        self.check()
        summary = IndexSummary(collection=self.store.alias, version=self.version)
        published = await self.store.published()
        await self.store.create_version(summary.version, self.embedder.dimension)
        state, sources = await self.store.state(summary.version)
        return summary, published, state, sources

    async def _finish(self, summary: IndexSummary, published: str | None, started: float) -> IndexSummary:
        if published != summary.version:
            await self.store.publish(summary.version)
            summary.published_now = True
        summary.seconds = time.perf_counter() - started
        return summary

    async def run_documents(
        self, documents: Iterable[tuple[str, ParsedDocument]], *, progress: Progress | None = None
    ) -> IndexSummary:
        """Index already-parsed documents, each under its source name (a dataset's records, say)."""
        started = time.perf_counter()
        summary, published, state, _ = await self._begin()
        items: list[Item] = [(source, functools.partial(_same, doc)) for source, doc in documents]
        await self._ingest(summary.version, items, state, summary, progress)
        return await self._finish(summary, published, started)

    async def run(
        self, paths: Iterable[Path], *, prune: bool = False, progress: Progress | None = None
    ) -> IndexSummary:
        """Index `paths` into this model's and chunker's version, then publish it if it is new."""
        started = time.perf_counter()
        summary, published, state, sources = await self._begin()
        version = summary.version
        roots = [Path(p) for p in paths]
        files = list(dict.fromkeys(walk(roots, summary.failed), None))  # each file once, in order
        if published is not None and published != version:
            # A new version starts from what the published one holds, so nothing silently drops out.
            _, old_sources = await self.store.state(published)
            seen = {source_name(f) for f in files}
            files += [Path(s) for s in sorted(set(old_sources.values()) - seen)]
        items: list[Item] = [(source_name(f), functools.partial(parse_file, f)) for f in files]
        await self._ingest(version, items, state, summary, progress)
        if published is not None and published != version:
            await self._follow(published, version, {source for source, _ in items}, summary, progress)
        if prune:
            walked = {doc_id_for(source_name(f)) for f in files}
            under = [source_name(r) for r in roots]
            for doc_id, source in sorted(sources.items(), key=lambda kv: kv[1]):
                if doc_id not in walked and any(_walked_into(source, u) for u in under):
                    await self.store.delete_document(version, doc_id)
                    summary.deleted.append(source)
        return await self._finish(summary, published, started)

    async def _follow(
        self, published: str, version: str, tried: set[str], summary: IndexSummary, progress: Progress | None
    ) -> None:
        """Bring into the new `version` what reached the published one while it was built (an upload through
        the API to a shared Qdrant server, say), so publishing it drops nothing: files the new version has
        not tried are indexed into it. A few rounds, in case more arrive meanwhile."""
        for _ in range(3):
            _, now = await self.store.state(published)
            state, mine = await self.store.state(version)
            missing = sorted(set(now.values()) - set(mine.values()) - tried)
            if not missing:
                return
            tried.update(missing)
            items: list[Item] = [(source, functools.partial(parse_file, Path(source))) for source in missing]
            await self._ingest(version, items, state, summary, progress)

    async def _ingest(
        self, version: str, items: list[Item], state: DocState, summary: IndexSummary, progress: Progress | None
    ) -> None:
        # Three stages joined by small queues, so each overlaps the others: parse + chunk (a thread),
        # embed (a thread; torch releases the GIL) and upsert. This loop plans what to embed and fills
        # pools; the embed stage works on one pool while the next is parsed.
        parsed: asyncio.Queue[tuple[str, Parsed | BaseException] | None] = asyncio.Queue(maxsize=64)
        pools: asyncio.Queue[list[Chunk] | None] = asyncio.Queue(maxsize=1)
        batches: asyncio.Queue[tuple[list[Chunk], list[list[float]], list[SparseVector]] | None] = asyncio.Queue(2)
        docs: dict[str, _Doc] = {}
        sparse_of: dict[str, SparseVector] = {}
        extra = self._extra()

        async def parse_all() -> None:
            try:
                for item in items:
                    try:
                        result: Parsed | BaseException = await asyncio.to_thread(self._parse, item)
                    except (ParseError, OSError, ValueError) as exc:
                        result = exc
                    await parsed.put((item[0], result))
            except Exception:  # an unexpected failure still ends the loop below; gather then raises it
                await parsed.put(None)
                raise
            await parsed.put(None)

        def report() -> None:
            if progress is not None:
                finished = len(summary.added) + len(summary.updated) + len(summary.unchanged) + len(summary.failed)
                progress(finished, summary.chunks_embedded)

        async def embed_all() -> None:
            while (pool := await pools.get()) is not None:
                vectors = await asyncio.to_thread(self.embedder.embed, [c.text for c in pool])
                summary.chunks_embedded += len(pool)
                report()
                await batches.put((pool, vectors, [sparse_of.pop(c.id) for c in pool]))
            await batches.put(None)

        async def upsert_all() -> None:
            while (item := await batches.get()) is not None:
                chunks, vectors, sparse = item
                await self.store.upsert(version, chunks, vectors, sparse, extra)
                for chunk in chunks:
                    doc = docs[chunk.doc_id]
                    doc.remaining -= 1
                    if doc.remaining == 0:  # all new chunks are in: now the stale ones may go
                        if not doc.new:  # a new document has no stale chunks; skip the filtered scan
                            await self.store.delete_document(version, doc.doc_id, keep_hash=chunk.content_hash)
                        (summary.added if doc.new else summary.updated).append(doc.source)
                report()

        # Embed pools of several batches: the embedder sorts each call's texts by length, so a larger
        # pool wastes less compute on padding.
        pool = self.batch_size * POOL_BATCHES
        tasks = [asyncio.create_task(parse_all()), asyncio.create_task(embed_all()), asyncio.create_task(upsert_all())]
        pending: list[Chunk] = []
        try:
            while (item := await parsed.get()) is not None:
                name, result = item
                if isinstance(result, BaseException):
                    summary.failed.append({"source": name, "error": _reason(result)})
                else:
                    source, chunks, sparse = result
                    sparse_of.update((c.id, sv) for c, sv in zip(chunks, sparse, strict=True))
                    await self._plan(version, source, chunks, state, docs, summary, pending)
                    while len(pending) >= pool:
                        await _put(pools, pending[:pool], tasks)
                        del pending[:pool]
                report()
            if pending:
                await _put(pools, pending, tasks)
            await _put(pools, None, tasks)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        report()

    async def _plan(
        self,
        version: str,
        source: str,
        chunks: list[Chunk],
        state: DocState,
        docs: dict[str, _Doc],
        summary: IndexSummary,
        pending: list[Chunk],
    ) -> None:
        if not chunks:
            summary.failed.append({"source": source, "error": "no text to index"})
            return
        doc_id, content_hash = chunks[0].doc_id, chunks[0].content_hash
        held = state.get(doc_id, {})
        if held == {content_hash: len(chunks)}:
            summary.unchanged.append(source)
        elif held.get(content_hash) == len(chunks):  # new chunks are in, stale ones left by a crash
            await self.store.delete_document(version, doc_id, keep_hash=content_hash)
            summary.updated.append(source)
        else:
            docs[doc_id] = _Doc(source, doc_id, chunks, new=not held, remaining=len(chunks))
            pending.extend(chunks)

    async def remove(self, doc_id: str) -> str | None:
        """Delete a document from the published version: its source, or None when it is not there."""
        version = await self.store.published()
        if version is None:
            return None
        _, sources = await self.store.state(version, doc_id)
        if doc_id not in sources:
            return None
        await self.store.delete_document(version, doc_id)
        return sources[doc_id]

    async def gc(self) -> list[str]:
        """Drop every version of the collection but the published one."""
        published = await self.store.published()
        dropped = [v for v in await self.store.versions() if v != published]
        for version in dropped:
            await self.store.drop(version)
        return dropped


async def _put(queue: asyncio.Queue[Any], item: Any, tasks: list[asyncio.Task[None]]) -> None:
    """Put into a stage's queue, unless a stage has failed: then raise its exception instead of waiting."""
    put = asyncio.ensure_future(queue.put(item))
    while not put.done():
        await asyncio.wait([put, *(t for t in tasks if not t.done())], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                put.cancel()
                raise exc


def _same(doc: ParsedDocument) -> ParsedDocument:
    return doc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.strerror or exc}"
    if isinstance(exc, OSError):
        return f"cannot read: {exc.strerror or exc}"
    return str(exc)


__all__ = ["IndexSummary", "Indexer", "StoreError", "doc_id_for", "source_name", "walk"]

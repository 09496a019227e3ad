"""`EdgeStore`: the `VectorStore` role on Qdrant Edge, Qdrant's own Rust engine run in-process.

This is the default for a single machine without a Qdrant server. Qdrant's local mode
(`QdrantClient(path=...)`) is pure Python and scores sparse vectors point by point (about a second
per hybrid query over 12k chunks); Edge runs the same engine as the server in compiled code (an
inverted sparse index with the IDF modifier, dense scoring, prefetch + fusion, payload indexes and
filters). No HNSW graph is built (`optimize()` is not called): at documentation and SciFact sizes
an exact dense scan is fast.

Layout under the folder: one Edge shard per version (`<folder>/<version>/`), and `aliases.json`
mapping each alias to its published version. `publish` rewrites that file and renames it into place
(`os.replace`), so the alias moves atomically and readers never see a mix. The shard's write-ahead
log makes each acknowledged upsert or delete survive kill -9. One process at a time holds a folder
(an exclusive lock on `<folder>/.lock`), like local mode; use a Qdrant server to share an index.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from indexer.sparse import SparseVector
from indexer.store import (
    DENSE,
    SPARSE,
    DocState,
    Filter,
    SearchQuery,
    StoreError,
    _tally,
    fused_top,
    passage,
    payload,
)
from indexer.types import Chunk, Passage

T = TypeVar("T")
ALIASES = "aliases.json"
SCROLL_PAGE = 1024


class EdgeStore:
    def __init__(self, alias: str, *, path: str) -> None:
        self.alias = alias
        self._root = Path(path)
        self._shards: dict[str, Any] = {}
        self._lock_file: Any = None
        self._alias_map: dict[str, str] | None = None
        self._io = threading.Lock()  # one shard operation at a time: the engine's own writer is single

    @property
    def ready(self) -> bool:
        return self._lock_file is not None

    async def start(self) -> None:
        if (self._root / "meta.json").exists() or (self._root / "collection").is_dir():
            raise StoreError(
                f"{self._root} holds a Qdrant local-mode index, not a Qdrant Edge one: set RIPPLE_QDRANT_ENGINE=local "
                "to use it as it is, or point RIPPLE_QDRANT_PATH at a new folder and index again"
            )
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            lock = (self._root / ".lock").open("a")
        except OSError as exc:
            raise StoreError(f"cannot open the Qdrant Edge folder {self._root}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            lock.close()
            raise StoreError(
                f"cannot open the Qdrant folder {self._root}: another process holds it. Local folders allow one "
                "process at a time: stop the other `ripple` process or point RIPPLE_QDRANT_URL at a Qdrant server"
            ) from exc
        self._lock_file = lock
        self._alias_map = self._read_aliases()
        for partial in self._root.glob(".*"):  # a version or alias file a killed process left half-made
            if partial.name != ".lock":
                shutil.rmtree(partial) if partial.is_dir() else partial.unlink()

    async def close(self) -> None:
        shards, self._shards = self._shards, {}
        for shard in shards.values():
            await self._call(shard.close)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        self._alias_map = None

    # -- reading -------------------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> list[Passage]:
        import qdrant_edge as qe

        version = self._aliases().get(self.alias)
        if version is None:
            return []
        where = _edge_filter(query.filter)
        dense = qe.Query.Nearest(list(query.dense), using=DENSE) if query.dense is not None else None
        sparse = (
            qe.Query.Nearest(qe.SparseVector(list(query.sparse.indices), list(query.sparse.values)), using=SPARSE)
            if query.sparse is not None
            else None
        )

        async def fetch(limit: int) -> list[Passage]:
            if query.mode == "dense":
                request = qe.QueryRequest(
                    limit=limit, query=dense, filter=where, with_payload=True, with_vector=[DENSE]
                )
            elif query.mode == "sparse":
                request = qe.QueryRequest(
                    limit=limit, query=sparse, filter=where, with_payload=True, with_vector=[DENSE]
                )
            else:
                request = qe.QueryRequest(
                    limit=limit,
                    prefetches=[
                        qe.Prefetch(limit=query.candidates, query=dense, filter=where),
                        qe.Prefetch(limit=query.candidates, query=sparse, filter=where),
                    ],
                    query=qe.Fusion.Rrf(k=query.rrf_k, weights=[query.dense_weight, 1.0]),  # type: ignore[arg-type]
                    with_payload=True,
                    with_vector=[DENSE],
                )
            try:
                shard = await self._shard(version)
                points = await self._call(shard.query, request)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"Qdrant Edge search failed: {exc}") from exc
            return [passage(str(p.id), p.payload or {}, p.score, p.vector) for p in points]

        return await (fused_top(query, fetch) if query.mode == "hybrid" else fetch(query.limit))

    async def sample(self) -> dict[str, Any] | None:
        import qdrant_edge as qe

        version = self._aliases().get(self.alias)
        if version is None:
            return None
        shard = await self._shard(version)
        records, _ = await self._call(shard.scroll, qe.ScrollRequest(limit=1, with_payload=True, with_vector=False))
        return dict(records[0].payload or {}) if records else None

    async def published(self) -> str | None:
        return self._aliases().get(self.alias)

    async def versions(self) -> list[str]:
        if not self._root.is_dir():
            return []
        prefix = self.alias + "__"
        return sorted(p.name for p in self._root.iterdir() if p.is_dir() and p.name.startswith(prefix))

    async def count(self, version: str | None = None) -> int:
        import qdrant_edge as qe

        name = version or self._aliases().get(self.alias)
        if name is None or not (self._root / name).is_dir():
            return 0
        shard = await self._shard(name)
        return int(await self._call(shard.count, qe.CountRequest(exact=True)))

    # -- writing -------------------------------------------------------------------------------

    async def create_version(self, version: str, dimension: int) -> None:
        import qdrant_edge as qe

        folder = self._root / version
        if folder.is_dir():  # the name already encodes the model and its dimension
            return
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        partial = self._root / f".{version}.{uuid.uuid4().hex[:8]}"
        shard = await self._call(qe.EdgeShard.create, str(partial), config)
        for key in ("doc_id", "source", "tenant", "content_hash"):
            await self._call(shard.update, qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword))
        await self._call(shard.flush)
        await self._call(shard.close)
        os.replace(partial, folder)  # a version folder exists only once it is a complete, empty shard

    async def state(self, version: str, doc_id: str | None = None) -> tuple[DocState, dict[str, str]]:
        import qdrant_edge as qe

        shard = await self._shard(version)
        docs: DocState = {}
        sources: dict[str, str] = {}
        offset: Any = None
        where = None
        if doc_id is not None:
            where = qe.Filter(must=[qe.FieldCondition(key="doc_id", match=qe.MatchValue(doc_id))])
        while True:
            request = qe.ScrollRequest(
                offset=offset,
                limit=SCROLL_PAGE,
                filter=where,
                with_payload=["doc_id", "content_hash", "source"],
                with_vector=False,
            )
            records, offset = await self._call(shard.scroll, request)
            _tally((r.payload or {} for r in records), docs, sources)
            if offset is None:
                return docs, sources

    async def upsert(
        self,
        version: str,
        chunks: Sequence[Chunk],
        vectors: Sequence[Sequence[float]],
        sparse: Sequence[SparseVector],
        extra: dict[str, Any],
    ) -> None:
        import qdrant_edge as qe

        points = [
            qe.Point(
                c.id,
                {DENSE: list(map(float, v)), SPARSE: qe.SparseVector(list(sv.indices), list(sv.values))},
                payload(c, extra),
            )
            for c, v, sv in zip(chunks, vectors, sparse, strict=True)
        ]
        shard = await self._shard(version)
        await self._call(shard.update, qe.UpdateOperation.upsert_points(points))

    async def delete_document(self, version: str, doc_id: str, *, keep_hash: str | None = None) -> None:
        import qdrant_edge as qe

        must_not: list[Any] | None = None
        if keep_hash:
            must_not = [qe.FieldCondition(key="content_hash", match=qe.MatchValue(keep_hash))]
        where = qe.Filter(must=[qe.FieldCondition(key="doc_id", match=qe.MatchValue(doc_id))], must_not=must_not)
        shard = await self._shard(version)
        await self._call(shard.update, qe.UpdateOperation.delete_points_by_filter(where))

    async def publish(self, version: str) -> None:
        shard = await self._shard(version)
        await self._call(shard.flush)  # the published version is on disk in full, not only in the WAL
        aliases = self._aliases()
        aliases[self.alias] = version
        partial = self._root / f".{ALIASES}.{uuid.uuid4().hex[:8]}"
        partial.write_text(json.dumps(aliases, indent=2, sort_keys=True))
        with partial.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, self._root / ALIASES)
        self._alias_map = aliases

    async def drop(self, version: str) -> None:
        if version == self._aliases().get(self.alias):
            raise StoreError(f"{version} is the published version of {self.alias!r}; it cannot be dropped")
        shard = self._shards.pop(version, None)
        if shard is not None:
            await self._call(shard.close)
        await asyncio.to_thread(shutil.rmtree, self._root / version, ignore_errors=True)

    # -- internals -------------------------------------------------------------------------------

    def _aliases(self) -> dict[str, str]:
        """The alias map, read from disk once at start: this process holds the folder's lock, so only its
        own `publish` can change the file, and `publish` keeps this copy current."""
        if self._alias_map is None:
            raise StoreError("EdgeStore.start() was not called")
        return dict(self._alias_map)

    def _read_aliases(self) -> dict[str, str]:
        try:
            return dict(json.loads((self._root / ALIASES).read_text()))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {self._root / ALIASES}: {exc}") from exc

    async def _shard(self, version: str) -> Any:
        shard = self._shards.get(version)
        if shard is None:
            import qdrant_edge as qe

            folder = self._root / version
            if not folder.is_dir():
                raise StoreError(f"collection {version} does not exist in {self._root}")
            try:
                shard = await self._call(qe.EdgeShard.load, str(folder))
            except Exception as exc:
                raise StoreError(f"cannot open {folder}: {exc}") from exc
            self._shards[version] = shard
        return shard

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._io:
                return fn(*args)

        return await asyncio.to_thread(locked)


def _edge_filter(spec: Filter | None) -> Any:
    import qdrant_edge as qe

    if not spec:
        return None
    conditions: list[Any] = []
    for key, value in spec.items():
        match: Any = qe.MatchAny(any=value) if isinstance(value, list) else qe.MatchValue(value)
        conditions.append(qe.FieldCondition(key=key, match=match))
    return qe.Filter(must=conditions)

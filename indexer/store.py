"""The `VectorStore` role: versioned collections of chunk vectors behind one name users query.

Users and the runtime query the *alias* (e.g. `ripple-docs`). Each physical collection (a
*version*) is named from the alias, the embedding model and the chunker settings, so changing
either builds a new version beside the old one; `publish` moves the alias to it in one atomic
Qdrant operation, and queries never see a mix. Old versions stay until `drop`.

Each point holds a dense vector (`dense`, cosine) and a BM25-style sparse vector (`bm25`, with
Qdrant's IDF modifier). Searches run dense, sparse, or hybrid: both as prefetches fused inside
Qdrant by reciprocal rank fusion, equal fused scores ordered by point id (`fused_top`). Payload
filters are applied inside the Qdrant query.

Real: `QdrantStore` (`AsyncQdrantClient`, local folder or server URL). Fake: `InMemoryStore`.
Both pass the same contract tests. Writes wait for Qdrant's acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from indexer.sparse import SparseVector
from indexer.types import Chunk, Passage

logger = logging.getLogger(__name__)

Mode = Literal["dense", "sparse", "hybrid"]
Filter = dict[str, str | int | bool | list[str] | list[int]]
"""Payload key -> required value, or a list of accepted values (all keys must match)."""
DENSE, SPARSE = "dense", "bm25"
SCHEMA = 2  # bump when the point layout changes: it changes every version name


@dataclass(frozen=True)
class SearchQuery:
    limit: int
    mode: Mode = "hybrid"
    dense: Sequence[float] | None = None
    sparse: SparseVector | None = None
    filter: Filter | None = None
    candidates: int = 100
    """How many each side of a hybrid query brings to the fusion."""
    rrf_k: int = 60
    dense_weight: float = 1.0
    """The dense ranking's weight in Qdrant's weighted RRF (the sparse ranking's is 1): a chunk at
    position p (0-based) scores 1 / ((p + 1) / weight + k - 1), so a weight above 1 lifts every dense
    position and narrows the gaps between them."""


TIE_MARGIN = 8
"""Fused points a hybrid search fetches beyond its limit, so that a tie at the cut is seen whole."""


async def fused_top(query: SearchQuery, fetch: Callable[[int], Awaitable[list[Passage]]]) -> list[Passage]:
    """The `query.limit` best points of a fusion that `fetch(n)` returns the top n of, equal scores in id order.

    Qdrant's RRF (server and Edge) sorts the fused points by score alone, out of a hash map seeded anew for
    each query, and scores tie often (dense rank a with sparse rank b ties b with a): tied points came back
    in another order on each query, and where a tie straddled the limit, which of them made it changed too
    (SciFact hybrid nDCG@10 0.7115-0.7152 on one index). So fetch `TIE_MARGIN` more; if the tie at the cut
    reaches the last of those, fetch all the fusion can hold; then order by (score descending, id) and cut.
    Only the order of equal scores changes."""
    most = 2 * query.candidates  # each prefetch brings at most `candidates`
    wanted = min(query.limit + TIE_MARGIN, most)
    hits = await fetch(wanted)
    if wanted < most and len(hits) == wanted and hits[-1].score == hits[query.limit - 1].score:
        hits = await fetch(most)
    return sorted(hits, key=lambda h: (-h.score, h.chunk_id))[: query.limit]


DocState = dict[str, dict[str, int]]
"""doc_id -> {content_hash: number of points}: what a version holds, for incremental runs."""


class StoreError(Exception):
    """The store is unreachable or refused an operation; the message says what to change."""


def version_name(alias: str, model_id: str, dimension: int, chunker: str, sparse: str = "") -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", model_id.lower()).strip("-")[-40:]
    digest = hashlib.sha256(f"{model_id}|{dimension}|{chunker}|{sparse}|{SCHEMA}".encode()).hexdigest()[:8]
    return f"{alias}__{slug}__{chunker}__{digest}"


class VectorStore(Protocol):
    alias: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def ready(self) -> bool: ...

    # Reading (the runtime): always through the alias.
    async def search(self, query: SearchQuery) -> list[Passage]: ...

    async def sample(self) -> dict[str, Any] | None:
        """One point's payload from the published version (to check which model built it)."""
        ...

    # Writing (the indexer): to one version at a time.
    async def published(self) -> str | None: ...

    async def versions(self) -> list[str]: ...

    async def create_version(self, version: str, dimension: int) -> None: ...

    async def state(self, version: str, doc_id: str | None = None) -> tuple[DocState, dict[str, str]]:
        """What `version` holds ({doc_id: {hash: count}}) and each doc_id's source; with `doc_id`, of that
        document alone, found by a filter (a delete read every point of the collection: 1 s at 100k)."""
        ...

    async def upsert(
        self,
        version: str,
        chunks: Sequence[Chunk],
        vectors: Sequence[Sequence[float]],
        sparse: Sequence[SparseVector],
        extra: dict[str, Any],
    ) -> None: ...

    async def delete_document(self, version: str, doc_id: str, *, keep_hash: str | None = None) -> None:
        """Delete a document's points, or only those whose content hash is not `keep_hash`."""
        ...

    async def publish(self, version: str) -> None: ...

    async def drop(self, version: str) -> None: ...

    async def count(self, version: str | None = None) -> int: ...


def _tally(payloads: Iterable[dict[str, Any]], docs: DocState, sources: dict[str, str]) -> None:
    """Count points per (document, content hash) and note each document's source."""
    for data in payloads:
        hashes = docs.setdefault(data["doc_id"], {})
        hashes[data["content_hash"]] = hashes.get(data["content_hash"], 0) + 1
        sources[data["doc_id"]] = data["source"]


def payload(chunk: Chunk, extra: dict[str, Any]) -> dict[str, Any]:
    return {**asdict(chunk), **extra, "indexed_at": datetime.now(UTC).isoformat()}


def passage(point_id: str, data: dict[str, Any], score: float, vector: Any = None) -> Passage:
    """A search hit; `vector` is the point's dense vector (a list, or a dict by vector name) when fetched."""
    if isinstance(vector, dict):
        vector = vector.get(DENSE)
    return Passage(
        chunk_id=str(point_id),
        doc_id=data["doc_id"],
        source=data["source"],
        text=data["text"],
        score=float(score),
        start=int(data["start"]),
        end=int(data["end"]),
        heading=data.get("heading", ""),
        page=data.get("page"),
        payload=data,
        vector=tuple(float(x) for x in vector) if isinstance(vector, list | tuple) else None,
    )


class QdrantStore:
    def __init__(
        self,
        alias: str,
        *,
        path: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        probe_every_s: float = 2.0,
    ) -> None:
        if not path and not url:
            raise ValueError("QdrantStore needs a local folder (path) or a server URL")
        self.alias = alias
        self._path = path
        self._url = url
        self._api_key = api_key
        self._client: Any = None
        self._probe_every_s = probe_every_s
        self._answering = True
        self._watch: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """Open, and with a server URL, answering its last health probe (so `/ready` follows an outage
        and its end within `probe_every_s` and a probe's timeout)."""
        return self._client is not None and self._answering

    async def _probe(self, misses_to_fail: int = 2) -> None:
        """With a server URL: ask it for its collections every `probe_every_s`. It is not answering after
        `misses_to_fail` failed probes in a row (one slow answer on a busy machine is not an outage), and
        answering again at the first success; each change of state is logged once."""
        misses = 0
        while True:
            await asyncio.sleep(self._probe_every_s)
            try:
                await asyncio.wait_for(self._client.get_collections(), timeout=max(self._probe_every_s, 1.0))
            except Exception as exc:
                misses += 1
                if self._answering and misses >= misses_to_fail:
                    logger.warning("Qdrant at %s stopped answering (%s): not ready until it does", self._url, exc)
                    self._answering = False
            else:
                misses = 0
                if not self._answering:
                    logger.warning("Qdrant at %s answers again: ready", self._url)
                self._answering = True

    async def start(self) -> None:
        from qdrant_client import AsyncQdrantClient

        if self._client is not None:
            return
        where = self._url or self._path
        try:
            if self._url:
                self._client = AsyncQdrantClient(url=self._url, api_key=self._api_key, timeout=10)
            else:
                self._client = AsyncQdrantClient(path=self._path)
            await self._client.get_collections()
        except RuntimeError as exc:  # local mode's file lock
            await self._discard_client()
            raise StoreError(
                f"cannot open the Qdrant folder {where}: {exc}. Local mode allows one process at a time: "
                "stop the other `ripple` process or point RIPPLE_QDRANT_URL at a Qdrant server"
            ) from exc
        except Exception as exc:
            await self._discard_client()
            raise StoreError(f"cannot reach Qdrant at {where}: {exc}") from exc
        if self._url:
            self._answering = True
            self._watch = asyncio.create_task(self._probe(), name="qdrant-health")

    async def _discard_client(self) -> None:
        """After a failed start: not ready, and no client left open."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            # gather, not a suppressed await: a cancellation of close() itself must still propagate.
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def search(self, query: SearchQuery) -> list[Passage]:
        from qdrant_client import models

        where = _qdrant_filter(query.filter)
        dense = list(query.dense) if query.dense is not None else None
        sparse = models.SparseVector(indices=query.sparse.indices, values=query.sparse.values) if query.sparse else None
        args: dict[str, Any]
        if query.mode == "dense":
            args = {"query": dense, "using": DENSE, "query_filter": where}
        elif query.mode == "sparse":
            args = {"query": sparse, "using": SPARSE, "query_filter": where}
        else:
            args = {
                "prefetch": [
                    models.Prefetch(query=dense, using=DENSE, limit=query.candidates, filter=where),
                    models.Prefetch(query=sparse, using=SPARSE, limit=query.candidates, filter=where),
                ],
                "query": models.RrfQuery(rrf=models.Rrf(k=query.rrf_k, weights=[query.dense_weight, 1.0])),
            }

        async def fetch(limit: int) -> list[Passage]:
            try:
                if not await self._client.collection_exists(self.alias):
                    return []
                result = await self._client.query_points(
                    self.alias, limit=limit, with_payload=True, with_vectors=[DENSE], **args
                )
            except Exception as exc:
                raise StoreError(f"Qdrant search failed: {exc}") from exc
            return [passage(str(p.id), p.payload or {}, p.score, p.vector) for p in result.points]

        return await (fused_top(query, fetch) if query.mode == "hybrid" else fetch(query.limit))

    async def sample(self) -> dict[str, Any] | None:
        if not await self._client.collection_exists(self.alias):
            return None
        points, _ = await self._client.scroll(self.alias, limit=1, with_payload=True, with_vectors=False)
        return dict(points[0].payload or {}) if points else None

    async def published(self) -> str | None:
        for alias in (await self._client.get_aliases()).aliases:
            if alias.alias_name == self.alias:
                return str(alias.collection_name)
        if await self._client.collection_exists(self.alias):
            raise StoreError(
                f"{self.alias!r} is a plain collection, not an alias (made by an older Ripple): "
                f"index into another RIPPLE_COLLECTION, or delete the collection {self.alias!r}"
            )
        return None

    async def versions(self) -> list[str]:
        names = [c.name for c in (await self._client.get_collections()).collections]
        return sorted(n for n in names if n.startswith(self.alias + "__"))

    async def create_version(self, version: str, dimension: int) -> None:
        from qdrant_client import models

        if await self._client.collection_exists(version):
            size = (await self._client.get_collection(version)).config.params.vectors[DENSE].size
            if size != dimension:
                raise StoreError(f"collection {version} holds {size}-dimensional vectors, not {dimension}")
            return
        await self._client.create_collection(
            version,
            vectors_config={DENSE: models.VectorParams(size=dimension, distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        if self._url:  # local mode ignores payload indexes (and warns)
            for key in ("doc_id", "source", "tenant"):
                await self._client.create_payload_index(version, key, models.PayloadSchemaType.KEYWORD)

    async def state(self, version: str, doc_id: str | None = None) -> tuple[DocState, dict[str, str]]:
        from qdrant_client import models

        docs: DocState = {}
        sources: dict[str, str] = {}
        offset = None
        where = None
        if doc_id is not None:
            where = models.Filter(must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id))])
        while True:
            points, offset = await self._client.scroll(
                version,
                scroll_filter=where,
                limit=1024,
                offset=offset,
                with_payload=["doc_id", "content_hash", "source"],
                with_vectors=False,
            )
            _tally((p.payload or {} for p in points), docs, sources)
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
        from qdrant_client import models

        points = [
            models.PointStruct(
                id=c.id,
                vector={DENSE: list(v), SPARSE: models.SparseVector(indices=sv.indices, values=sv.values)},
                payload=payload(c, extra),
            )
            for c, v, sv in zip(chunks, vectors, sparse, strict=True)
        ]
        await self._client.upsert(version, points=points, wait=True)

    async def delete_document(self, version: str, doc_id: str, *, keep_hash: str | None = None) -> None:
        from qdrant_client import models

        must_not: list[Any] | None = None
        if keep_hash:
            must_not = [models.FieldCondition(key="content_hash", match=models.MatchValue(value=keep_hash))]
        selector = models.FilterSelector(
            filter=models.Filter(
                must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id))], must_not=must_not
            )
        )
        await self._client.delete(version, points_selector=selector, wait=True)

    async def publish(self, version: str) -> None:
        from qdrant_client import models

        ops: list[Any] = []
        if await self.published() is not None:
            ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.alias)))
        ops.append(
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=version, alias_name=self.alias))
        )
        await self._client.update_collection_aliases(change_aliases_operations=ops)

    async def drop(self, version: str) -> None:
        if version == await self.published():
            raise StoreError(f"{version} is the published version of {self.alias!r}; it cannot be dropped")
        await self._client.delete_collection(version)

    async def count(self, version: str | None = None) -> int:
        name = version or self.alias
        if not await self._client.collection_exists(name):
            return 0
        return int((await self._client.count(name, exact=True)).count)


class InMemoryStore:
    """A fake for tests: dicts of points per version, an alias, brute-force cosine search."""

    def __init__(self, alias: str = "docs") -> None:
        self.alias = alias
        self._versions: dict[str, dict[str, tuple[list[float], SparseVector, dict[str, Any]]]] = {}
        self._published: str | None = None
        self.started = False

    @property
    def ready(self) -> bool:
        return self.started

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    async def search(self, query: SearchQuery) -> list[Passage]:
        points = {
            k: p for k, p in self._versions.get(self._published or "", {}).items() if _matches(p[2], query.filter)
        }
        ranked: list[list[tuple[float, str]]] = []
        weights: list[float] = []
        if query.mode in ("dense", "hybrid") and query.dense is not None:
            ranked.append(sorted(((-_cosine(query.dense, v), k) for k, (v, _, _) in points.items())))
            weights.append(query.dense_weight)
        if query.mode in ("sparse", "hybrid") and query.sparse is not None:
            idf = _idf(
                query.sparse.indices, [sv for _, sv, _ in self._versions.get(self._published or "", {}).values()]
            )
            terms = dict(zip(query.sparse.indices, query.sparse.values, strict=True))
            scored = []
            for k, (_, sv, _) in points.items():
                score = sum(terms[i] * w * idf[i] for i, w in zip(sv.indices, sv.values, strict=True) if i in terms)
                if score > 0:
                    scored.append((-score, k))
            ranked.append(sorted(scored))
            weights.append(1.0)
        if query.mode != "hybrid":
            best = [(-s, k) for s, k in ranked[0][: query.limit]] if ranked else []
        else:
            fused: dict[str, float] = {}
            for ranking, weight in zip(ranked, weights, strict=True):
                for rank, (_, k) in enumerate(ranking[: query.candidates]):
                    # Qdrant's weighted RRF: a weight stretches or shrinks the ranking's positions.
                    fused[k] = fused.get(k, 0.0) + 1.0 / ((rank + 1) / weight + query.rrf_k - 1)
            best = sorted(((s, k) for k, s in fused.items()), key=lambda t: (-t[0], t[1]))[: query.limit]
        return [passage(k, points[k][2], s, list(points[k][0])) for s, k in best]

    async def sample(self) -> dict[str, Any] | None:
        points = self._versions.get(self._published or "", {})
        return dict(next(iter(points.values()))[2]) if points else None

    async def published(self) -> str | None:
        return self._published

    async def versions(self) -> list[str]:
        return sorted(self._versions)

    async def create_version(self, version: str, dimension: int) -> None:
        self._versions.setdefault(version, {})

    async def state(self, version: str, doc_id: str | None = None) -> tuple[DocState, dict[str, str]]:
        docs: DocState = {}
        sources: dict[str, str] = {}
        points = self._versions[version].values()
        _tally((data for _, _, data in points if doc_id is None or data["doc_id"] == doc_id), docs, sources)
        return docs, sources

    async def upsert(
        self,
        version: str,
        chunks: Sequence[Chunk],
        vectors: Sequence[Sequence[float]],
        sparse: Sequence[SparseVector],
        extra: dict[str, Any],
    ) -> None:
        for c, v, sv in zip(chunks, vectors, sparse, strict=True):
            self._versions[version][c.id] = (list(v), sv, payload(c, extra))

    async def delete_document(self, version: str, doc_id: str, *, keep_hash: str | None = None) -> None:
        points = self._versions[version]
        for key in [k for k, (_, _, p) in points.items() if p["doc_id"] == doc_id and p["content_hash"] != keep_hash]:
            del points[key]

    async def publish(self, version: str) -> None:
        self._published = version

    async def drop(self, version: str) -> None:
        if version == self._published:
            raise StoreError(f"{version} is the published version of {self.alias!r}; it cannot be dropped")
        del self._versions[version]

    async def count(self, version: str | None = None) -> int:
        return len(self._versions.get(version or self._published or "", {}))


def _qdrant_filter(spec: Filter | None) -> Any:
    from qdrant_client import models

    if not spec:
        return None
    conditions: list[Any] = []
    for key, value in spec.items():
        match: Any = models.MatchAny(any=value) if isinstance(value, list) else models.MatchValue(value=value)
        conditions.append(models.FieldCondition(key=key, match=match))
    return models.Filter(must=conditions)


def _matches(data: dict[str, Any], spec: Filter | None) -> bool:
    """As Qdrant matches: a dotted key is a path into nested fields, and a value equals only a value of
    its own type (the string "0" is not the integer 0, nor True the integer 1)."""
    for key, value in (spec or {}).items():
        accepted = value if isinstance(value, list) else [value]
        found: Any = data
        for part in key.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        if not any(type(found) is type(a) and found == a for a in accepted):
            return False
    return True


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    na = math.sqrt(sum(x * x for x in a)) or 1.0
    nb = math.sqrt(sum(x * x for x in b)) or 1.0
    return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


def _idf(indices: Sequence[int], vectors: Sequence[SparseVector]) -> dict[int, float]:
    """Qdrant's IDF: ln((N - n + 0.5) / (n + 0.5) + 1), over the whole version."""
    n_docs = len(vectors)
    counts = {i: sum(1 for v in vectors if i in v.indices) for i in indices}
    return {i: math.log((n_docs - n + 0.5) / (n + 0.5) + 1) for i, n in counts.items()}

"""The `VectorStore` role: chunks and their vectors in, scored passages out.

Real: `QdrantStore` over `AsyncQdrantClient`, embedded local mode (a folder) or a server (URL).
Fake: `InMemoryStore`. Both satisfy the same contract tests. Writes wait for Qdrant's
acknowledgement. Aliases, versioned collections and sparse vectors come with later work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Protocol

from indexer.types import Chunk, Passage


class StoreError(Exception):
    """The store is unreachable or refused an operation; the message says what to change."""


class VectorStore(Protocol):
    async def start(self, dimension: int) -> None: ...

    async def close(self) -> None: ...

    @property
    def ready(self) -> bool: ...

    async def upsert(
        self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]], extra: dict[str, Any]
    ) -> None: ...

    async def document_hash(self, doc_id: str) -> str | None: ...

    async def delete_document(self, doc_id: str) -> None: ...

    async def search(self, vector: Sequence[float], limit: int) -> list[Passage]: ...

    async def count(self) -> int: ...


def _payload(chunk: Chunk, extra: dict[str, Any]) -> dict[str, Any]:
    return {**asdict(chunk), **extra, "indexed_at": datetime.now(UTC).isoformat()}


def _passage(point_id: str, payload: dict[str, Any], score: float) -> Passage:
    return Passage(
        chunk_id=str(point_id),
        doc_id=payload["doc_id"],
        source=payload["source"],
        text=payload["text"],
        score=float(score),
        start=int(payload["start"]),
        end=int(payload["end"]),
        heading=payload.get("heading", ""),
        payload=payload,
    )


class QdrantStore:
    def __init__(
        self, collection: str, *, path: str | None = None, url: str | None = None, api_key: str | None = None
    ) -> None:
        if not path and not url:
            raise ValueError("QdrantStore needs a local folder (path) or a server URL")
        self.collection = collection
        self._path = path
        self._url = url
        self._api_key = api_key
        self._client: Any = None

    async def start(self, dimension: int) -> None:
        from qdrant_client import AsyncQdrantClient, models

        where = self._url or self._path
        try:
            if self._url:
                self._client = AsyncQdrantClient(url=self._url, api_key=self._api_key, timeout=10)
            else:
                self._client = AsyncQdrantClient(path=self._path)
            if not await self._client.collection_exists(self.collection):
                await self._client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE),
                )
                if self._url:  # local mode ignores payload indexes (and warns)
                    await self._client.create_payload_index(self.collection, "doc_id", models.PayloadSchemaType.KEYWORD)
            info = await self._client.get_collection(self.collection)
        except RuntimeError as exc:  # local mode's file lock
            raise StoreError(
                f"cannot open the Qdrant folder {where}: {exc}. Local mode allows one process at a time: "
                "stop the other `ripple` process or point RIPPLE_QDRANT_URL at a Qdrant server"
            ) from exc
        except Exception as exc:
            raise StoreError(f"cannot reach Qdrant at {where}: {exc}") from exc
        size = info.config.params.vectors.size
        if size != dimension:
            raise StoreError(
                f"collection {self.collection!r} holds {size}-dimensional vectors but the embedder makes "
                f"{dimension}: set RIPPLE_COLLECTION to a new name or re-index with the original model"
            )

    @property
    def ready(self) -> bool:
        return self._client is not None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]], extra: dict[str, Any]) -> None:
        from qdrant_client import models

        points = [
            models.PointStruct(id=c.id, vector=list(v), payload=_payload(c, extra))
            for c, v in zip(chunks, vectors, strict=True)
        ]
        await self._client.upsert(self.collection, points=points, wait=True)

    def _doc_filter(self, doc_id: str) -> Any:
        from qdrant_client import models

        return models.Filter(must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id))])

    async def document_hash(self, doc_id: str) -> str | None:
        points, _ = await self._client.scroll(self.collection, scroll_filter=self._doc_filter(doc_id), limit=1)
        return points[0].payload.get("content_hash") if points else None

    async def delete_document(self, doc_id: str) -> None:
        from qdrant_client import models

        await self._client.delete(
            self.collection, points_selector=models.FilterSelector(filter=self._doc_filter(doc_id)), wait=True
        )

    async def search(self, vector: Sequence[float], limit: int) -> list[Passage]:
        try:
            result = await self._client.query_points(
                self.collection, query=list(vector), limit=limit, with_payload=True
            )
        except Exception as exc:
            raise StoreError(f"Qdrant search failed: {exc}") from exc
        return [_passage(str(p.id), p.payload or {}, p.score) for p in result.points]

    async def count(self) -> int:
        return int((await self._client.count(self.collection, exact=True)).count)


class InMemoryStore:
    """A fake for tests: a dict of points and brute-force cosine search."""

    def __init__(self) -> None:
        self._points: dict[str, tuple[list[float], dict[str, Any]]] = {}
        self.started = False

    async def start(self, dimension: int) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    @property
    def ready(self) -> bool:
        return self.started

    async def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]], extra: dict[str, Any]) -> None:
        for c, v in zip(chunks, vectors, strict=True):
            self._points[c.id] = (list(v), _payload(c, extra))

    async def document_hash(self, doc_id: str) -> str | None:
        for _, payload in self._points.values():
            if payload["doc_id"] == doc_id:
                return str(payload["content_hash"])
        return None

    async def delete_document(self, doc_id: str) -> None:
        self._points = {k: p for k, p in self._points.items() if p[1]["doc_id"] != doc_id}

    async def search(self, vector: Sequence[float], limit: int) -> list[Passage]:
        def cos(a: Sequence[float], b: Sequence[float]) -> float:
            na = math.sqrt(sum(x * x for x in a)) or 1.0
            nb = math.sqrt(sum(x * x for x in b)) or 1.0
            return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)

        scored = sorted(((cos(vector, v), k, p) for k, (v, p) in self._points.items()), key=lambda t: (-t[0], t[1]))
        return [_passage(k, p, s) for s, k, p in scored[:limit]]

    async def count(self) -> int:
        return len(self._points)

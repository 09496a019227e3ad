"""The indexer's data: a document's chunk and a retrieved passage (frozen, internal)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Chunk:
    id: str
    """Deterministic point id (a UUID string): the same input gives the same ids."""
    doc_id: str
    source: str
    index: int
    text: str
    start: int
    """Character offset of the chunk in the document's text."""
    end: int
    heading: str = ""
    content_hash: str = ""


@dataclass(frozen=True)
class Passage:
    """A chunk as retrieval returns it, with its score."""

    chunk_id: str
    doc_id: str
    source: str
    text: str
    score: float
    start: int
    end: int
    heading: str = ""
    payload: dict[str, Any] = field(default_factory=dict, compare=False)

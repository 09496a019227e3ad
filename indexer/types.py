"""The indexer's data: parsed documents, their chunks, and retrieved passages (frozen, internal)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Section:
    """A run of a document's extracted text under one heading (and on one page, for PDFs)."""

    text: str
    heading: str = ""
    """The heading path, outermost first, joined with " > " (empty when there is none)."""
    page: int | None = None
    """1-based page number for paged formats (PDF), else None."""


@dataclass(frozen=True)
class ParsedDocument:
    """A file's extracted text as ordered sections. Chunk spans index into `text`."""

    format: str
    """"markdown", "text", "html" or "pdf"."""
    sections: tuple[Section, ...]

    @property
    def text(self) -> str:
        return SECTION_SEPARATOR.join(s.text for s in self.sections)


SECTION_SEPARATOR = "\n\n"


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
    page: int | None = None
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
    page: int | None = None
    payload: dict[str, Any] = field(default_factory=dict, compare=False)
    vector: tuple[float, ...] | None = field(default=None, compare=False, repr=False)
    """The chunk's dense vector as stored (the groundedness rail compares answer sentences with it)."""

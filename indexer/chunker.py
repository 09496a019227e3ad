"""Split a document's text into overlapping chunks that keep their heading and character span.

Markdown is cut at headings first, then each section into pieces of at most `max_chars`,
breaking at paragraph, then sentence, then word boundaries, with `overlap` characters repeated
between neighbours. Deterministic: the same text and settings give the same chunks and ids.
Token-exact sizing with the embedder's tokenizer is left to the indexer work that follows.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

from indexer.types import Chunk

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
_BREAKS = ("\n\n", ". ", "\n", " ")
NAMESPACE = uuid.UUID("6a4f3f7e-5d43-4c61-9a3e-1f3c2b7a9d10")


@dataclass(frozen=True)
class ChunkerSettings:
    max_chars: int = 1000
    overlap: int = 150

    def __post_init__(self) -> None:
        if self.max_chars < 100:
            raise ValueError(f"chunk max_chars must be at least 100, got {self.max_chars}")
        if not 0 <= self.overlap < self.max_chars // 2:
            raise ValueError(f"chunk overlap must be in [0, max_chars/2), got {self.overlap}")


def _sections(text: str) -> list[tuple[int, int, str]]:
    """(start, end, heading path) for each Markdown section; one section for plain text."""
    marks = list(_HEADING.finditer(text))
    if not marks:
        return [(0, len(text), "")]
    out: list[tuple[int, int, str]] = []
    if marks[0].start() > 0:
        out.append((0, marks[0].start(), ""))
    trail: list[tuple[int, str]] = []
    for i, m in enumerate(marks):
        level, title = len(m.group(1)), m.group(2).strip()
        trail = [(lv, t) for lv, t in trail if lv < level] + [(level, title)]
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out.append((m.start(), end, " > ".join(t for _, t in trail)))
    return out


def _cut(text: str, start: int, end: int, settings: ChunkerSettings) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            break
        stop = min(pos + settings.max_chars, end)
        if stop < end:
            window = text[pos:stop]
            for sep in _BREAKS:
                cut = window.rfind(sep)
                if cut > settings.max_chars // 2:
                    stop = pos + cut + len(sep)
                    break
        piece_end = stop
        while piece_end > pos and text[piece_end - 1].isspace():
            piece_end -= 1
        spans.append((pos, piece_end))
        if stop >= end:
            break
        pos = max(stop - settings.overlap, pos + 1)
    return spans


def chunk_document(doc_id: str, source: str, text: str, settings: ChunkerSettings | None = None) -> list[Chunk]:
    settings = settings or ChunkerSettings()
    content_hash = hashlib.sha256(text.encode()).hexdigest()
    chunks: list[Chunk] = []
    for sec_start, sec_end, heading in _sections(text):
        for start, end in _cut(text, sec_start, sec_end, settings):
            index = len(chunks)
            chunks.append(
                Chunk(
                    id=str(uuid.uuid5(NAMESPACE, f"{doc_id}:{content_hash}:{index}")),
                    doc_id=doc_id,
                    source=source,
                    index=index,
                    text=text[start:end],
                    start=start,
                    end=end,
                    heading=heading,
                    content_hash=content_hash,
                )
            )
    return chunks

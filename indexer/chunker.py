"""Split a parsed document into overlapping chunks sized in the embedding model's own tokens.

Chunks never cross a section (a heading, or a PDF page), keep that section's heading path and page,
and record their character span in the document's extracted text. A window that would cut a
sentence is pulled back to the last sentence or line end in its second half. Deterministic: the
same text and settings give the same chunks and the same ids; the id also encodes the settings'
fingerprint, so two chunkers never share ids.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from indexer.types import SECTION_SEPARATOR, Chunk, ParsedDocument

NAMESPACE = uuid.UUID("6a4f3f7e-5d43-4c61-9a3e-1f3c2b7a9d10")
VERSION = 2  # bump when the algorithm changes: it changes every id and the collection name

TokenOffsets = Callable[[str], list[tuple[int, int]]]
"""Character (start, end) of each token of a text, as the embedding model's tokenizer cuts it."""

_SENTENCE_END = ".!?:;"


@dataclass(frozen=True)
class ChunkerSettings:
    max_tokens: int = 200
    overlap_tokens: int = 32

    def __post_init__(self) -> None:
        if self.max_tokens < 16:
            raise ValueError(f"chunk max_tokens must be at least 16, got {self.max_tokens}")
        if not 0 <= self.overlap_tokens <= self.max_tokens // 2:
            raise ValueError(f"chunk overlap_tokens must be in [0, max_tokens/2], got {self.overlap_tokens}")

    @property
    def fingerprint(self) -> str:
        return f"t{self.max_tokens}o{self.overlap_tokens}v{VERSION}"

    def as_dict(self) -> dict[str, int | str]:
        return {"max_tokens": self.max_tokens, "overlap_tokens": self.overlap_tokens, "version": VERSION}


def _break_at(text: str, tokens: list[tuple[int, int]], start: int, stop: int) -> int:
    """The token index to end a window at: after a sentence or line end in its second half, else `stop`."""
    for k in range(stop, start + (stop - start) // 2, -1):
        end = tokens[k - 1][1]
        if text[end - 1] in _SENTENCE_END or text[end : end + 1] == "\n":
            return k
    return stop


CHARS_PER_TOKEN = 8
"""A window holds at most this many characters per token of `max_tokens` (1,600 for 200). Ordinary text
runs 4-5 characters a token; a word the tokenizer cannot read (over 100 characters: a hash, a hex dump, a
DNA sequence) is one `[UNK]` token however long it is, and made a window of millions of characters."""
_PIECE = 64


def _pieces(tokens: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Tokens, with any longer than `_PIECE` characters split into pieces of at most that many."""
    if all(end - start <= _PIECE for start, end in tokens):
        return tokens
    out: list[tuple[int, int]] = []
    for start, end in tokens:
        out.extend((at, min(at + _PIECE, end)) for at in range(start, end, _PIECE))
    return out


def _windows(text: str, tokens: list[tuple[int, int]], settings: ChunkerSettings) -> list[tuple[int, int]]:
    tokens = _pieces(tokens)
    longest = settings.max_tokens * CHARS_PER_TOKEN
    spans: list[tuple[int, int]] = []
    i, n = 0, len(tokens)
    while i < n:
        stop = min(i + settings.max_tokens, n)
        while stop > i + 1 and tokens[stop - 1][1] - tokens[i][0] > longest:
            stop -= 1
        cut = _break_at(text, tokens, i, stop) if stop < n else stop
        spans.append((tokens[i][0], tokens[cut - 1][1]))
        if cut >= n:
            break
        following = max(cut - settings.overlap_tokens, i + 1)
        # The overlap is bounded in characters too (a quarter of the longest window), or windows of long
        # pieces would step by one piece at a time.
        while following < cut - 1 and tokens[cut - 1][1] - tokens[following][0] > longest // 4:
            following += 1
        i = following
    return spans


def document_hash(doc: ParsedDocument) -> str:
    return hashlib.sha256(doc.text.encode()).hexdigest()


def chunk_document(
    doc_id: str, source: str, doc: ParsedDocument, offsets: TokenOffsets, settings: ChunkerSettings
) -> list[Chunk]:
    content_hash = document_hash(doc)
    chunks: list[Chunk] = []
    base = 0
    for section in doc.sections:
        for start, end in _windows(section.text, offsets(section.text), settings):
            index = len(chunks)
            chunks.append(
                Chunk(
                    id=str(uuid.uuid5(NAMESPACE, f"{doc_id}:{content_hash}:{settings.fingerprint}:{index}")),
                    doc_id=doc_id,
                    source=source,
                    index=index,
                    text=section.text[start:end],
                    start=base + start,
                    end=base + end,
                    heading=section.heading,
                    page=section.page,
                    content_hash=content_hash,
                )
            )
        base += len(section.text) + len(SECTION_SEPARATOR)
    return chunks

"""A retrieved passage for tests that need one, with or without its stored vector."""

from __future__ import annotations

from collections.abc import Sequence

from indexer.types import Passage


def passage(text: str, vector: Sequence[float] | None = None, source: str = "s.md") -> Passage:
    return Passage(
        chunk_id=source,
        doc_id=source,
        source=source,
        text=text,
        score=1.0,
        start=0,
        end=len(text),
        vector=tuple(vector) if vector is not None else None,
    )

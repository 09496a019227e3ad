"""Chunking in tokens: spans, sections, overlap, limits and determinism."""

from __future__ import annotations

import pytest

from indexer.chunker import ChunkerSettings, chunk_document
from indexer.embedder import HashingEmbedder
from indexer.types import ParsedDocument, Section

TOKENS = HashingEmbedder().token_offsets
LONG = " ".join(f"Sentence {i} is about part A." for i in range(120))
DOC = ParsedDocument(
    "markdown",
    (
        Section("# Title\n\nIntro paragraph.", "Title"),
        Section("## Part A\n\n" + LONG, "Title > Part A", 3),
        Section("Deep detail.", "Title > Part A > Detail"),
    ),
)


def test_spans_point_into_the_documents_text() -> None:
    chunks = chunk_document("d", "d.md", DOC, TOKENS, ChunkerSettings())
    for c in chunks:
        assert DOC.text[c.start : c.end] == c.text and c.text.strip() == c.text


def test_chunks_keep_their_sections_heading_and_page_and_never_cross_sections() -> None:
    chunks = chunk_document("d", "d.md", DOC, TOKENS, ChunkerSettings(max_tokens=50, overlap_tokens=10))
    assert chunks[0].heading == "Title" and chunks[0].text == "# Title\n\nIntro paragraph."
    assert chunks[-1].heading == "Title > Part A > Detail" and chunks[-1].text == "Deep detail."
    middle = [c for c in chunks if c.heading == "Title > Part A"]
    assert len(middle) > 3 and all(c.page == 3 for c in middle)


def test_windows_respect_the_token_limit_overlap_and_prefer_sentence_ends() -> None:
    settings = ChunkerSettings(max_tokens=50, overlap_tokens=10)
    part = [c for c in chunk_document("d", "d.md", DOC, TOKENS, settings) if c.heading == "Title > Part A"]
    assert all(len(TOKENS(c.text)) <= 50 for c in part)
    assert all(c.text.endswith(".") for c in part), "cut at sentence ends when one is in the window's second half"
    for prev, nxt in zip(part, part[1:], strict=False):
        assert nxt.start < prev.end, "neighbours overlap"


def test_same_input_same_ids_other_settings_or_text_other_ids() -> None:
    a = chunk_document("d", "d.md", DOC, TOKENS, ChunkerSettings())
    assert [c.id for c in a] == [c.id for c in chunk_document("d", "d.md", DOC, TOKENS, ChunkerSettings())]
    b = chunk_document("d", "d.md", DOC, TOKENS, ChunkerSettings(max_tokens=100))
    assert a[0].id != b[0].id
    changed = ParsedDocument("markdown", (*DOC.sections, Section("More.")))
    assert a[0].id != chunk_document("d", "d.md", changed, TOKENS, ChunkerSettings())[0].id


@pytest.mark.parametrize("max_tokens,overlap", [(8, 0), (100, 60), (100, -1)])
def test_bad_settings_say_what_is_wrong(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="max_tokens|overlap"):
        ChunkerSettings(max_tokens=max_tokens, overlap_tokens=overlap)


def test_a_word_the_tokenizer_reads_as_one_token_does_not_make_a_huge_chunk() -> None:
    """MiniLM's tokenizer reads a word over 100 characters as one [UNK] token, however long: a 200,000-
    character hex dump was one chunk. Windows hold at most 8 characters per token of max_tokens, and
    their overlap at most a quarter of that (ordinary text, at 4-5 characters a token, is not affected)."""
    from indexer.chunker import CHARS_PER_TOKEN

    def unk_offsets(text: str) -> list[tuple[int, int]]:  # as MiniLM's tokenizer cuts words over 100 chars
        spans, at = [], 0
        for word in text.split(" "):
            spans.append((at, at + len(word)))
            at += len(word) + 1
        return [s for s in spans if s[1] > s[0]]

    settings = ChunkerSettings(max_tokens=50, overlap_tokens=10)
    text = "Before. " + "ab" * 10_000 + " after."
    doc = ParsedDocument("text", (Section(text),))
    chunks = chunk_document("d", "d.md", doc, unk_offsets, settings)
    longest = 50 * CHARS_PER_TOKEN
    assert len(chunks) > 1 and max(len(c.text) for c in chunks) <= longest
    assert all(doc.text[c.start : c.end] == c.text for c in chunks)
    steps = [b.start - a.start for a, b in zip(chunks[1:-1], chunks[2:], strict=True)]
    assert min(steps) >= longest - longest // 4 - 64, "the overlap is bounded in characters too"

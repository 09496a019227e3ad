"""Chunking: spans, headings, overlap, limits and determinism."""

from __future__ import annotations

import pytest

from indexer.chunker import ChunkerSettings, chunk_document

DOC = (
    "# Title\n\nIntro paragraph.\n\n## Part A\n\n"
    + ("Sentence about part A. " * 80)
    + "\n\n### Detail\n\nDeep detail.\n"
)


def test_spans_point_into_the_original_text() -> None:
    for c in chunk_document("d", "d.md", DOC):
        assert DOC[c.start : c.end] == c.text and c.text.strip() == c.text


def test_heading_path_is_kept() -> None:
    headings = [c.heading for c in chunk_document("d", "d.md", DOC)]
    assert headings[0] == "Title"
    assert "Title > Part A" in headings
    assert headings[-1] == "Title > Part A > Detail"


def test_long_sections_are_cut_with_overlap_within_the_limit() -> None:
    settings = ChunkerSettings(max_chars=300, overlap=60)
    part_a = [c for c in chunk_document("d", "d.md", DOC, settings) if c.heading == "Title > Part A"]
    assert len(part_a) > 3
    assert all(len(c.text) <= 300 for c in part_a)
    for prev, nxt in zip(part_a, part_a[1:], strict=False):
        assert nxt.start < prev.end, "neighbours overlap"


def test_same_input_same_ids_and_changed_input_new_ids() -> None:
    a = chunk_document("d", "d.md", DOC)
    assert [c.id for c in a] == [c.id for c in chunk_document("d", "d.md", DOC)]
    b = chunk_document("d", "d.md", DOC + "More.")
    assert a[0].id != b[0].id and len({c.index for c in a}) == len(a)


def test_plain_text_has_no_heading() -> None:
    [c] = chunk_document("t", "t.txt", "just some text")
    assert c.heading == "" and c.text == "just some text"


@pytest.mark.parametrize("max_chars,overlap", [(50, 0), (1000, 600), (1000, -1)])
def test_bad_settings_say_what_is_wrong(max_chars: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="max_chars|overlap"):
        ChunkerSettings(max_chars=max_chars, overlap=overlap)

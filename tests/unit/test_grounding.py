"""Groundedness: which sentences are judged, how flags are placed, that vectors are reused, and the
refusing and flagging rails through real NeMo (bag-of-words vectors stand in for the model here; the
real embedder is in tests/integration/test_grounding_model.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from guards import DEFAULT_CONFIG
from guards.evaluation import no_llm
from guards.grounding import FLAG, Groundedness
from guards.nemo import NemoGuard
from indexer.embedder import HashingEmbedder
from tests.passages import passage

SOURCES = [
    "The Zorblax protocol was designed by Mira Okonkwo in 2019. It keeps the clocks of lunar stations in step.",
    "Beacons pulse every ninety seconds.",
]
PASSAGES = [passage(t) for t in SOURCES]  # no stored vectors: each is embedded once
SUPPORTED = "The Zorblax protocol was designed by Mira Okonkwo [1]."
UNSUPPORTED = "Bananas grow best in warm and humid tropical gardens."


class Counting:
    def __init__(self) -> None:
        self.embedder, self.texts = HashingEmbedder(), []  # type: ignore[var-annotated]

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts += list(texts)
        return self.embedder.embed(texts)


def test_only_complete_sentences_of_enough_words_are_judged() -> None:
    g = Groundedness(HashingEmbedder().embed)
    text = "See [1]. Version 2.5 is the current release! Is it stable? and then the model kept"
    judged = [text[s:e].strip() for s, e in g.sentences(text)]
    # "See [1]." and "Is it stable?" are too short, the last fragment has no end mark.
    assert judged == ["Version 2.5 is the current release!"]


def test_unsupported_sentences_are_flagged_in_place() -> None:
    g = Groundedness(HashingEmbedder().embed)
    answer = f"{SUPPORTED} {UNSUPPORTED} And more"
    flagged = g.flag(answer, PASSAGES)
    assert flagged == f"{SUPPORTED} {UNSUPPORTED}{FLAG} And more"
    assert [answer[s:e].strip() for s, e, _ in g.unsupported(answer, PASSAGES)] == [UNSUPPORTED]
    assert g.flag(UNSUPPORTED, []) == UNSUPPORTED + FLAG  # no sources: nothing is supported


def test_vectors_are_embedded_once_per_text() -> None:
    embed = Counting()
    g = Groundedness(embed)
    g.unsupported(SUPPORTED + " ", PASSAGES)
    first = len(embed.texts)
    g.unsupported(f"{SUPPORTED} {UNSUPPORTED} ", PASSAGES)  # the stream grew by one sentence
    assert embed.texts[first:] == [UNSUPPORTED]


def config_with(tmp_path: Path, flow: str) -> Path:
    (tmp_path / "rails.co").write_text((DEFAULT_CONFIG / "rails.co").read_text())
    config = (DEFAULT_CONFIG / "config.yml").read_text().replace("- ripple flag groundedness", f"- {flow}")
    (tmp_path / "config.yml").write_text(config)
    return tmp_path


async def test_the_refusing_rail_blocks_an_unsupported_answer(tmp_path: Path) -> None:
    g = NemoGuard(config_with(tmp_path, "ripple check groundedness"), no_llm, embed=HashingEmbedder().embed)
    await g.start()
    msgs = [{"role": "user", "content": "Who designed Zorblax?"}]
    assert (await g.check_output(msgs, SUPPORTED, PASSAGES)).allowed
    verdict = await g.check_output(msgs, f"{SUPPORTED} {UNSUPPORTED}", PASSAGES)
    assert not verdict.allowed and verdict.rail == "ripple check groundedness"


async def test_the_default_rail_flags_and_without_an_embedder_fails_loudly() -> None:
    msgs = [{"role": "user", "content": "Who designed Zorblax?"}]
    g = NemoGuard(DEFAULT_CONFIG, no_llm, embed=HashingEmbedder().embed)
    await g.start()
    verdict = await g.check_output(msgs, f"{SUPPORTED} {UNSUPPORTED}", PASSAGES)
    assert verdict.allowed and verdict.content == f"{SUPPORTED} {UNSUPPORTED}{FLAG}"
    bare = NemoGuard(DEFAULT_CONFIG, no_llm)
    await bare.start()
    assert (await bare.check_input(msgs)).allowed  # input rails need no embedder
    with pytest.raises(RuntimeError, match="need an embedder"):
        await bare.check_output(msgs, f"{SUPPORTED} {UNSUPPORTED}", PASSAGES)


def test_with_stored_vectors_the_sources_are_not_embedded_again() -> None:
    embed = Counting()
    g = Groundedness(embed)
    stored = [passage(t, v) for t, v in zip(SOURCES, HashingEmbedder().embed(SOURCES), strict=True)]
    answer = f"{SUPPORTED} {UNSUPPORTED} "
    assert [answer[s:e].strip() for s, e, _ in g.unsupported(answer, stored)] == [UNSUPPORTED]
    assert sorted(embed.texts) == sorted([SUPPORTED.replace("[1]", ""), UNSUPPORTED])  # the two claims only


def test_a_citation_after_the_end_mark_belongs_to_its_sentence() -> None:
    """A stream's window and the whole answer must judge the same sentences, or the marks would differ."""
    g = Groundedness(HashingEmbedder().embed)
    window = f"{UNSUPPORTED}[2] "
    whole = f"{UNSUPPORTED}[2] {SUPPORTED} More"
    assert g.flag(whole, PASSAGES).startswith(g.flag(window, PASSAGES))
    assert [whole[s:e].strip() for s, e in g.sentences(whole)] == [f"{UNSUPPORTED}[2]", SUPPORTED]


async def test_a_failing_groundedness_check_blocks_rather_than_passes() -> None:
    def broken(texts: Sequence[str]) -> list[list[float]]:
        raise OSError("embedder gone")

    g = NemoGuard(DEFAULT_CONFIG, no_llm, embed=broken)
    await g.start()
    verdict = await g.check_output([{"role": "user", "content": "q"}], f"{UNSUPPORTED} ", PASSAGES)
    assert not verdict.allowed

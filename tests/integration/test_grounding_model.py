"""Groundedness with the real embedder (all-MiniLM-L6-v2, packaged) at the default threshold, against the
passages' vectors as the store holds them: sentences a passage supports pass, paraphrases included,
sentences on other topics are flagged."""

from __future__ import annotations

import pytest

from guards.grounding import FLAG, Groundedness
from indexer.embedder import SentenceTransformerEmbedder
from indexer.types import Passage
from runtime.models import packaged_embedder_path
from tests.passages import passage

SOURCES = [
    "The Zorblax protocol was designed by Mira Okonkwo in 2019. It keeps the clocks of lunar research stations "
    "in step by sending pulsed infrared beacons between them every ninety seconds.",
    "When a beacon loses power, the stations fall back to the Quellin drift model, which keeps their clocks "
    "within two milliseconds of each other for up to six hours.",
]


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    embedder = SentenceTransformerEmbedder(str(packaged_embedder_path()), device="cpu")
    embedder.start()
    return embedder


@pytest.fixture(scope="module")
def stored(embedder: SentenceTransformerEmbedder) -> list[Passage]:
    return [passage(t, v) for t, v in zip(SOURCES, embedder.embed(SOURCES), strict=True)]


@pytest.mark.parametrize(
    "sentence",
    [
        "Mira Okonkwo designed the Zorblax protocol [1].",
        "Lunar stations keep their clocks synchronised with infrared beacon pulses.",
        "If a beacon has no power, the Quellin drift model keeps the clocks close for six hours.",
    ],
)
def test_supported_sentences_pass(embedder: SentenceTransformerEmbedder, stored: list[Passage], sentence: str) -> None:
    assert Groundedness(embedder.embed).unsupported(sentence, stored) == []


@pytest.mark.parametrize(
    "sentence",
    [
        "Tomatoes need six hours of direct sunlight every day.",
        "The French Revolution began with the storming of the Bastille.",
        "You can reset your router by holding the button for ten seconds.",
    ],
)
def test_sentences_on_other_topics_are_flagged(
    embedder: SentenceTransformerEmbedder, stored: list[Passage], sentence: str
) -> None:
    judge = Groundedness(embedder.embed)
    [(_, _, score)] = judge.unsupported(sentence, stored)
    assert score < judge.threshold
    assert judge.flag(sentence, stored) == sentence + FLAG


def test_passages_without_a_stored_vector_are_embedded_and_judged_alike(
    embedder: SentenceTransformerEmbedder, stored: list[Passage]
) -> None:
    judge = Groundedness(embedder.embed)
    bare = [passage(t) for t in SOURCES]
    answer = "Mira Okonkwo designed the Zorblax protocol [1]. Tomatoes need six hours of direct sunlight every day."
    assert judge.flag(answer, bare) == judge.flag(answer, stored) == answer + FLAG

"""Groundedness with the real embedder (all-MiniLM-L6-v2, packaged) at the default threshold: sentences a
source supports pass, sentences on other topics are flagged, paraphrases included."""

from __future__ import annotations

import pytest

from guards.grounding import FLAG, Groundedness
from indexer.embedder import SentenceTransformerEmbedder
from runtime.models import packaged_embedder_path

SOURCES = [
    "The Zorblax protocol was designed by Mira Okonkwo in 2019. It keeps the clocks of lunar research stations "
    "in step by sending pulsed infrared beacons between them every ninety seconds.",
    "When a beacon loses power, the stations fall back to the Quellin drift model, which keeps their clocks "
    "within two milliseconds of each other for up to six hours.",
]


@pytest.fixture(scope="module")
def judge() -> Groundedness:
    embedder = SentenceTransformerEmbedder(str(packaged_embedder_path()), device="cpu")
    embedder.start()
    return Groundedness(embedder.embed)


@pytest.mark.parametrize(
    "sentence",
    [
        "Mira Okonkwo designed the Zorblax protocol [1].",
        "Lunar stations keep their clocks synchronised with infrared beacon pulses.",
        "If a beacon has no power, the Quellin drift model keeps the clocks close for six hours.",
    ],
)
def test_supported_sentences_pass(judge: Groundedness, sentence: str) -> None:
    assert judge.unsupported(sentence, SOURCES) == []


@pytest.mark.parametrize(
    "sentence",
    [
        "Tomatoes need six hours of direct sunlight every day.",
        "The French Revolution began with the storming of the Bastille.",
        "You can reset your router by holding the button for ten seconds.",
    ],
)
def test_sentences_on_other_topics_are_flagged(judge: Groundedness, sentence: str) -> None:
    [(_, _, score)] = judge.unsupported(sentence, SOURCES)
    assert score < judge.threshold
    assert judge.flag(sentence, SOURCES) == sentence + FLAG


def test_against_stored_passage_vectors_the_verdicts_are_the_same(judge: Groundedness) -> None:
    """The runtime's path: the passages' stored vectors instead of their sentences."""
    embedder = SentenceTransformerEmbedder(str(packaged_embedder_path()), device="cpu")
    embedder.start()
    stored = embedder.embed(SOURCES)
    supported = "Mira Okonkwo designed the Zorblax protocol [1]. Lunar stations keep their clocks synchronised."
    assert judge.unsupported(supported, SOURCES, stored) == []
    off_topic = "Tomatoes need six hours of direct sunlight every day."
    assert judge.flag(off_topic, SOURCES, stored) == off_topic + FLAG

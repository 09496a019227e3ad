"""BM25-style sparse vectors, computed locally: the lexical half of hybrid retrieval.

A document's vector holds, per stemmed term, the BM25 term-frequency part
`tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))`; a query's holds 1 per distinct term.
Qdrant's `Modifier.IDF` supplies the inverse document frequency from the collection itself at
query time, so the product is BM25 and nothing here needs corpus statistics (documents can be
added one at a time). Terms are lower-cased words, English stop words dropped, Snowball-stemmed,
and hashed (murmur3, 32 bits) to sparse indices. Nothing is downloaded.

Scripts written without spaces between words (Han, Hiragana, Katakana, Hangul, Thai, Lao, Khmer,
Myanmar) give no words to split, so a run of them becomes overlapping character bigrams instead
("北京大学" → 北京, 京大, 大学; a lone character stays a unigram), as Lucene's CJKAnalyzer and
Elasticsearch's cjk_bigram filter do: a query term of two or more characters then matches inside a
sentence, and IDF discounts the bigrams that straddle two words. Han and kana in one run bigram
across the boundary ("食べ"), as there. For Thai, Lao, Khmer and Myanmar, which have dictionary
segmenters that this module leaves out, a hand-written Thai check (18 passages, 30 queries, BM25
with IDF) chose code-point bigrams (MRR 0.978, no query missed) over bigrams of grapheme clusters
(0.878: the 1-cluster words งู, ปู, ผี, a consonant with its marks, could never match) and
code-point trigrams (0.867, also missing 2-letter words such as ไฟ); grapheme bigrams did match
fewer wrong passages (4.5 a query against 8.4), which IDF ranks below the right one. Left out: word
segmentation by dictionary, and stemming or stop words for any language but English.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import mmh3
import regex

# Words: runs of letters and digits of any script with the combining marks inside them (Hindi's vowel
# signs, Thai's tone marks), read in NFC so a decomposed "é" is the composed one. Letters of the scripts
# written without spaces are cut out of words as runs to bigram; their decimal digits stay words, as
# ASCII ones do ("2024年" gives 2024 and 年). Han and Hiragana are taken with their script extensions,
# which bring in the marks the kana share (ー, the voicing marks, the repeat marks); the others' would
# bring in Latin combining marks and the modifier apostrophe of Ukrainian words.
_LETTER = r"[\p{L}\p{N}\p{M}]"
_UNSPACED = r"[\p{scx=Han}\p{scx=Hiragana}\p{Katakana}\p{Hangul}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]"
_RUN = rf"[[{_LETTER}&&{_UNSPACED}]--\p{{Nd}}]"
_TOKEN = regex.compile(rf"(?V1)(?P<run>{_RUN}+)|[{_LETTER}--{_RUN}]+")
_WORD = regex.compile(rf"{_LETTER}+")  # text with none of those scripts: words alone, three times faster
_HAS_UNSPACED = regex.compile(_UNSPACED)
WORDS_VERSION = 3
"""Bump when the word splitting changes: it is part of the encoder's name, so of every collection's version."""
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
    off on once only or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours yourself yourselves""".split()
)


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class Bm25Encoder:
    k1: float = 1.2
    b: float = 0.75
    avg_len: float = 80.0
    """Typical number of terms in a chunk (after stop words); only shapes length normalisation."""

    @cached_property
    def _stemmer(self):  # type: ignore[no-untyped-def]
        import snowballstemmer

        return snowballstemmer.stemmer("english")

    @property
    def name(self) -> str:
        return f"bm25-k{self.k1:g}-b{self.b:g}-l{self.avg_len:g}-w{WORDS_VERSION}"

    def terms(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFC", text).lower()
        if not _HAS_UNSPACED.search(text):
            return list(self._stemmer.stemWords([w for w in _WORD.findall(text) if w not in STOP_WORDS]))
        terms: list[str] = []
        for match in _TOKEN.finditer(text):
            token = match[0]
            if match.lastgroup == "run":
                terms += [token[i : i + 2] for i in range(max(len(token) - 1, 1))]
            elif token not in STOP_WORDS:
                terms.append(self._stemmer.stemWord(token))
        return terms

    def _vector(self, weights: dict[int, float]) -> SparseVector:
        indices = sorted(weights)
        return SparseVector(indices, [weights[i] for i in indices])

    def encode_document(self, text: str) -> SparseVector:
        terms = self.terms(text)
        norm = self.k1 * (1 - self.b + self.b * len(terms) / self.avg_len)
        weights: dict[int, float] = {}
        for term, tf in Counter(terms).items():
            index = mmh3.hash(term, signed=False)
            weights[index] = weights.get(index, 0.0) + tf * (self.k1 + 1) / (tf + norm)
        return self._vector(weights)

    def encode_query(self, text: str) -> SparseVector:
        return self._vector({mmh3.hash(term, signed=False): 1.0 for term in set(self.terms(text))})

"""`InjectionClassifier`: a small prompt-injection / jailbreak detector that needs no model at run time.

Features are TF-IDF weighted character n-grams (1-4, within word boundaries, as scikit-learn's
`char_wb`), scored by a logistic regression; a text is also scored sentence by sentence and keeps
its highest score, because deepset-style attacks append an instruction to a harmless question and
the harmless part would otherwise dilute it. The weights live in `guards/artifacts/injection.npz`
(vocabulary, idf, coefficients) with `injection.json` (threshold, provenance, cross-validated
metrics); `python -m guards.train_injection` rebuilds both. Loading reads those two files only:
no pickle, no hub, no training data.

Deliberately left out: sentence-embedding features (measured: +1-2 points of detection for an
embedder call per check; see the training report) and any LLM judge (the default 135M model cannot
judge safety).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from guards.checks import strip_hidden

ARTIFACT = Path(__file__).parent / "artifacts" / "injection.npz"

NGRAMS = (1, 4)
MIN_COVERAGE = 0.5
"""Below this share of known letter n-grams the classifier abstains (the phrase patterns still run). Chosen
on the training split: 544 of its 546 prompts are at 0.83 or above; the two below (0.02 and 0.17) are
attacks written in Khmer and Russian, scripts the vocabulary barely covers."""
_WHITESPACE = re.compile(r"\s\s+")
# Sentence ends, and literal "\n" sequences (deepset prompts carry them escaped).
_SEGMENTS = re.compile(r"(?<=[.!?\n])\s+|\\n")


def normalise(text: str) -> str:
    # Invisible characters (zero-width, bidi, tags...) are used to split trigger words apart.
    return strip_hidden(unicodedata.normalize("NFKC", text)).lower()


def char_ngrams(text: str, ngrams: tuple[int, int] = NGRAMS) -> list[str]:
    """Character n-grams of each word padded with spaces, exactly as scikit-learn's `char_wb`."""
    grams: list[str] = []
    lo, hi = ngrams
    for word in _WHITESPACE.sub(" ", normalise(text)).split():
        w = f" {word} "
        for n in range(lo, hi + 1):
            if len(w) <= n:
                # scikit-learn counts a word no longer than n once, then stops growing n
                grams.append(w)
                break
            grams.extend(w[i : i + n] for i in range(len(w) - n + 1))
    return grams


def segments(text: str) -> list[str]:
    """The sentences of `text` worth scoring on their own; none when it is one sentence."""
    parts = [p for p in _SEGMENTS.split(text) if len(p.strip()) > 3]
    return parts if len(parts) > 1 else []


@dataclass(frozen=True)
class InjectionClassifier:
    vocabulary: dict[str, int]
    idf: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float
    meta: dict[str, object]
    ngrams: tuple[int, int] = NGRAMS

    @classmethod
    def load(cls, path: Path = ARTIFACT) -> InjectionClassifier:
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(
                f"no injection classifier at {path} (+ .json): rebuild it with `python -m guards.train_injection`"
            )
        with np.load(path, allow_pickle=False) as data:
            grams = [str(g) for g in data["vocabulary"]]
            idf = data["idf"].astype(np.float64)
            coef = data["coef"].astype(np.float64)
            intercept = float(data["intercept"])
        meta = json.loads(meta_path.read_text())
        lo, hi = meta.get("ngram_range", NGRAMS)
        return cls({g: i for i, g in enumerate(grams)}, idf, coef, intercept, float(meta["threshold"]), meta, (lo, hi))

    def _score_one(self, text: str) -> float:
        counts: dict[int, int] = {}
        for gram in char_ngrams(text, self.ngrams):
            i = self.vocabulary.get(gram)
            if i is not None:
                counts[i] = counts.get(i, 0) + 1
        if not counts:
            return 1.0 / (1.0 + math.exp(-self.intercept))
        idx = np.fromiter(counts, dtype=np.int64, count=len(counts))
        tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
        weights = tf * self.idf[idx]
        z = float(weights @ self.coef[idx]) / float(np.linalg.norm(weights)) + self.intercept
        return 1.0 / (1.0 + math.exp(-z))

    def score(self, text: str) -> float:
        """Probability-like score in [0, 1]: the highest of the whole text and each of its sentences."""
        return max([self._score_one(text), *(self._score_one(s) for s in segments(text))])

    def coverage(self, text: str) -> float:
        """The share of the text's letter-bearing n-grams that the classifier has weights for."""
        grams = [g for g in char_ngrams(text, self.ngrams) if any(ch.isalpha() for ch in g)]
        return sum(g in self.vocabulary for g in grams) / len(grams) if grams else 1.0

    def is_injection(self, text: str) -> bool:
        """Flagged when the score passes the threshold and the classifier can read the text: on text it
        mostly cannot (`MIN_COVERAGE`), a few punctuation n-grams decide the score alone, and any plain
        question in Russian scored 0.8-0.97 ("Пожалуйста, помоги мне." 0.97)."""
        return self.score(text) > self.threshold and self.coverage(text) >= MIN_COVERAGE


@lru_cache(maxsize=1)
def default_classifier() -> InjectionClassifier:
    """The shipped classifier, loaded once (about 0.1 s) on first use or by `NemoGuard.start()`."""
    return InjectionClassifier.load(ARTIFACT)

"""`InjectionClassifier`: a small prompt-injection / jailbreak detector that needs no model at run time.

Features are TF-IDF weighted character n-grams (1-4, within word boundaries, as scikit-learn's
`char_wb`), scored by a logistic regression; a text is also scored sentence by sentence and keeps
its highest score, because deepset-style attacks append an instruction to a harmless question and
the harmless part would otherwise dilute it. A text longer than most training prompts (`window_chars`,
the 90% quantile of their lengths) is not scored whole: its sentences are, and runs of consecutive
sentences that fit that length, so the model only judges texts of the lengths it learned from. Scored
whole, a pasted Wikipedia paragraph with a question was refused 24% of the time.

The weights live in `guards/artifacts/injection.npz` (vocabulary, idf, coefficients) with
`injection.json` (threshold, window length, provenance, cross-validated metrics);
`python -m guards.train_injection` rebuilds both. Loading reads those two files only: no pickle,
no hub, no training data.

Deliberately left out: sentence-embedding features in the classifier (measured: +1-2 points of
detection for an embedder call per check; see the README) and any LLM judge (the default 135M model
cannot judge safety). A second opinion from sentence embeddings on long texts the classifier flags was
tried and left out (see the README).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from guards.checks import strip_hidden

ARTIFACT = Path(__file__).parent / "artifacts" / "injection.npz"

NGRAMS = (1, 4)
MIN_COVERAGE = 0.5
"""Below this share of known letter n-grams the classifier abstains (the phrase patterns still run). Chosen
on the training split: 544 of its 546 prompts are at 0.83 or above; the two below (0.02 and 0.17) are
attacks written in Khmer and Russian, scripts the vocabulary barely covers."""
_LETTER = re.compile(r"[^\W\d_]")
# A word without a letter. Linear: it can only start where a word does. (A pattern for words *with* a letter,
# \S*[^\W\d_]\S*, backtracks quadratically over a long run of dashes.)
_BARE_WORD = re.compile(r"(?<!\S)(?:(?![^\W\d_])\S)+(?!\S)")
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
    window_chars: int | None = None
    """Texts longer than this are scored by windows of sentences (see `score`); None scores every text whole."""

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
        window = meta.get("window_chars")
        return cls(
            {g: i for i, g in enumerate(grams)},
            idf,
            coef,
            intercept,
            float(meta["threshold"]),
            meta,
            (lo, hi),
            None if window is None else int(window),
        )

    @cached_property
    def _weights(self) -> tuple[list[float], list[float]]:
        """idf and coefficients as lists: the window's per-n-gram updates index them one at a time."""
        return self.idf.tolist(), self.coef.tolist()

    def _counts(self, text: str) -> dict[int, int]:
        counts: dict[int, int] = {}
        for gram in char_ngrams(text, self.ngrams):
            i = self.vocabulary.get(gram)
            if i is not None:
                counts[i] = counts.get(i, 0) + 1
        return counts

    def _probability(self, dot: float, norm: float) -> float:
        """The score of a text whose tf-idf weights w give dot = w . coef and norm = |w| (0: no known n-gram)."""
        z = (dot / norm if norm > 0 else 0.0) + self.intercept
        return 1.0 / (1.0 + math.exp(-z))

    def _score_counts(self, counts: dict[int, int]) -> float:
        if not counts:
            return self._probability(0.0, 0.0)
        idx = np.fromiter(counts, dtype=np.int64, count=len(counts))
        tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
        weights = tf * self.idf[idx]
        return self._probability(float(weights @ self.coef[idx]), float(np.linalg.norm(weights)))

    def _score_one(self, text: str) -> float:
        return self._score_counts(self._counts(text))

    def score(self, text: str) -> float:
        """Probability-like score in [0, 1]. A text up to `window_chars` long: the highest of the whole text and
        each of its sentences. A longer one: the highest of its sentences and of its windows (runs of its
        sentences that have letters, see `_windows_score`)."""
        parts = segments(text)
        if self.window_chars is None or len(text) <= self.window_chars or not parts:
            return max([self._score_one(text), *(self._score_one(s) for s in parts)])
        # Windows are made of the sentences with a letter in them: a run of dots or dashes between an
        # attack's sentences would otherwise fill a window and keep them apart.
        worded: list[str] = []
        bare: list[str] = []
        for part in parts:
            (worded if _LETTER.search(part) else bare).append(part)
        scores = [self._score_one(p) for p in bare]
        if worded:
            scores.append(self._windows_score(worded, self.window_chars))
        return max(scores)

    def _windows_score(self, parts: list[str], limit: int) -> float:
        """The highest score of each part alone and of each window: the longest run of consecutive parts that
        starts at a part and fits `limit` characters of words with a letter, joined by single spaces (a run of
        one part is the part alone, scored once). The window slides, its n-gram counts, dot product and
        squared norm updated as parts enter and leave, so the work grows with the text's length, not with
        length x window."""
        counted = [self._counts(p) for p in parts]
        best = max(self._score_counts(c) for c in counted)
        # A part's size, for the limit, leaves out its words without a letter: filler such as a run of dashes
        # glued to a sentence would otherwise take a window's room and keep an attack's sentences apart.
        sizes = [len(p) - sum(map(len, _BARE_WORD.findall(p))) for p in parts]
        idf, coef = self._weights
        window: dict[int, int] = {}  # the window's count of each n-gram
        dot = square = 0.0

        def move(part: int, sign: int) -> None:
            nonlocal dot, square
            for i, n in counted[part].items():
                old = window.get(i, 0)
                new = old + sign * n
                w_old = (1.0 + math.log(old)) * idf[i] if old else 0.0
                w_new = (1.0 + math.log(new)) * idf[i] if new else 0.0
                dot += (w_new - w_old) * coef[i]
                square += w_new * w_new - w_old * w_old
                window[i] = new

        end = length = 0  # the window is parts[start:end]; `length` its size, joined
        for start in range(len(parts)):
            if end == start:
                dot = square = 0.0  # the counts are back to 0 exactly; no rounding carried across a gap
                move(start, 1)
                end, length = start + 1, sizes[start]
            while end < len(parts) and length + 1 + sizes[end] <= limit:
                move(end, 1)
                end, length = end + 1, length + 1 + sizes[end]
            if end - start > 1:
                best = max(best, self._probability(dot, math.sqrt(max(square, 0.0))))
            move(start, -1)
            length -= sizes[start] + (1 if end - start > 1 else 0)
        return best

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

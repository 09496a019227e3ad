"""Groundedness: is each sentence of an answer supported by the sources the model was given?

A sentence is supported when its embedding is close enough (cosine >= `threshold`) to at least one
sentence of the sources, with the same embedder that indexes the documents. This measures whether the
answer talks about what the sources say, not whether it follows from them: a sentence that
contradicts a source on its own topic still scores high. Calibrated on SciFact's train claims (200,
all-MiniLM-L6-v2): a claim against the best sentence of its gold abstract scores >= 0.40 for 94.5% of
claims, against a random abstract < 0.40 for 98.5% (AUC 0.995), hence the default 0.40.

The runtime passes the passages' stored chunk vectors, so a sentence is compared with whole passages
and the sources are never embedded again (embedding 5 passages' sentences took 0.7 s on 2 CPU cores,
against about 10 ms for one answer sentence). Against whole abstracts the same claims score >= 0.30
for 95.5% (gold) and < 0.30 for 96.5% (random; AUC 0.991), hence `PASSAGE_THRESHOLD` 0.30.

Only complete sentences are judged: text ending with . ! or ? (followed by whitespace or the end of
the text so far), so a stream's windows and the whole answer judge the same sentences; a last
fragment with no end mark is not judged. Sentences under `min_words` words ("See [1].") and citation
markers are not judged. Vectors are cached by text, so a stream's growing answer and the same sources
are embedded once per request.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

EmbedFn = Callable[[Sequence[str]], Sequence[Sequence[float]]]

FLAG = " [not supported by the sources]"
PASSAGE_THRESHOLD = 0.30
# A sentence: text up to a run of end marks, with any citation markers right after it ("blue.[1]"),
# followed by whitespace or the end of the text so far. The lookbehind starts the run of end marks
# at its first mark, which keeps matching linear on long runs of dots. `fragment`: the unfinished
# rest, never judged.
_SENTENCE = re.compile(
    r"(?P<sentence>.+?(?<![.!?])[.!?]+(?:\s*\[\d+(?:\s*,\s*\d+)*\])*)(?=\s|$)|(?P<fragment>.+$)", re.DOTALL
)
_CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")


class Groundedness:
    def __init__(
        self,
        embed: EmbedFn,
        *,
        threshold: float = 0.40,
        passage_threshold: float = PASSAGE_THRESHOLD,
        min_words: int = 4,
        cache: int = 4096,
    ) -> None:
        self._embed = embed
        self.threshold = threshold
        self.passage_threshold = passage_threshold
        self.min_words = min_words
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache
        self._lock = threading.Lock()

    def _vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of `texts`, from the cache or the embedder (checks of many requests share it)."""
        with self._lock:
            found = {t: self._cache[t] for t in texts if t in self._cache}
            for text in found:
                self._cache.move_to_end(text)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            vectors = [np.asarray(v, dtype=np.float32) for v in self._embed(missing)]
            found.update(zip(missing, vectors, strict=True))
            with self._lock:
                self._cache.update(zip(missing, vectors, strict=True))
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return np.stack([found[t] for t in texts])

    def sentences(self, text: str) -> list[tuple[int, int]]:
        """Spans of the complete sentences of `text` worth judging."""
        spans = []
        for m in _SENTENCE.finditer(text):
            body = _CITATION.sub("", m.group()).strip()
            if m.group("sentence") and len(body.split()) >= self.min_words:
                spans.append((m.start(), m.end()))
        return spans

    def unsupported(
        self, answer: str, sources: Sequence[str], vectors: Sequence[Sequence[float]] | None = None
    ) -> list[tuple[int, int, float]]:
        """(start, end, best similarity) of each judged sentence of `answer` below the threshold.

        With `vectors` (the sources' stored chunk vectors, as retrieval returns them) a sentence is
        compared with whole passages and nothing of the sources is embedded again; without them, with
        each sentence of the sources (more precise, but the sources cost an embedding per request)."""
        spans = self.sentences(answer)
        if not spans:
            return []
        if vectors is not None and len(vectors) == len(sources) and len(vectors) > 0:
            claims = [_CITATION.sub("", answer[s:e]).strip() for s, e in spans]
            stored = np.asarray(vectors, dtype=np.float32)
            stored /= np.maximum(np.linalg.norm(stored, axis=1, keepdims=True), 1e-12)
            best = (self._vectors(claims) @ stored.T).max(axis=1)
            limit = self.passage_threshold
            return [(s, e, float(v)) for (s, e), v in zip(spans, best, strict=True) if v < limit]
        # Every sentence of the sources counts, however short, and so does a last fragment.
        source_sentences = [
            part for source in sources for m in _SENTENCE.finditer(source) if (part := m.group().strip())
        ]
        if not source_sentences:
            return [(s, e, 0.0) for s, e in spans]
        claims = [_CITATION.sub("", answer[s:e]).strip() for s, e in spans]
        scores = (self._vectors(claims) @ self._vectors(source_sentences).T).max(axis=1)
        return [(s, e, float(score)) for (s, e), score in zip(spans, scores, strict=True) if score < self.threshold]

    def flag(self, answer: str, sources: Sequence[str], vectors: Sequence[Sequence[float]] | None = None) -> str:
        """`answer` with `FLAG` after each unsupported sentence."""
        out, at = [], 0
        for _, end, _ in self.unsupported(answer, sources, vectors):
            stripped = answer[at:end].rstrip()
            out.append(stripped + FLAG + answer[at + len(stripped) : end])
            at = end
        return "".join(out) + answer[at:]

"""Groundedness: is each sentence of an answer supported by the passages the model was given?

A sentence is supported when its embedding, by the embedder that indexes the documents, has cosine
>= `threshold` with at least one passage's vector. Passages come with their stored vectors (every
store returns them with a search hit), so only the answer's sentences are embedded; a passage without
one is embedded once. This measures whether the answer talks about what the passages say, not whether
it follows from them: a sentence that contradicts a passage on its own topic still scores high.
Calibrated on SciFact's train claims (200, all-MiniLM-L6-v2): a claim against its gold abstract scores
>= 0.30 for 95.5% of claims, against a random abstract < 0.30 for 96.5% (AUC 0.991).

Only complete sentences are judged: text ending with . ! or ? and any citation markers right after
(followed by whitespace or the end of the text so far), so a stream's windows and the whole answer
judge the same sentences; a last fragment with no end mark is not judged, nor are sentences under
`min_words` words ("See [1]."). Vectors are cached by text, so a stream's growing answer is embedded
once per sentence.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from indexer.types import Passage

EmbedFn = Callable[[Sequence[str]], Sequence[Sequence[float]]]

FLAG = " [not supported by the sources]"
# A sentence: text up to a run of end marks, with any citation markers right after it ("blue.[1]"),
# followed by whitespace or the end of the text so far. The lookbehind starts the run of end marks
# at its first mark, which keeps matching linear on long runs of dots. `fragment`: the unfinished
# rest, never judged.
_SENTENCE = re.compile(
    r"(?P<sentence>.+?(?<![.!?])[.!?]+(?:\s*\[\d+(?:\s*,\s*\d+)*\])*)(?=\s|$)|(?P<fragment>.+$)", re.DOTALL
)
_CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")
# A sentence's end mark with its citations, the blanks after them and a citation under way, at the end
# of a text.
_CLOSING = re.compile(r"[.!?]+(?:\s*\[\d+(?:\s*,\s*\d+)*\])*(\s*)(\[[\d\s,]*)?\Z")


def settled(text: str, end: int, start: int = 0) -> int:
    """The last cut at or before `end` after which `Groundedness.flag` on `text[:cut]` agrees with the
    flag on `text` and on any text that follows it: not right after a sentence's end mark or citations
    (the text may go on without a blank: "Yes!AKIA..."), nor after the blank that follows them unless the
    next character is known and opens no citation, nor inside a citation. `start`: text before it is
    settled."""
    m = _CLOSING.search(text, start, end)
    if m and (m.group(2) is not None or not m.group(1) or end == len(text) or text[end] == "["):
        return m.start()
    return end


class Groundedness:
    def __init__(
        self,
        embed: EmbedFn,
        *,
        threshold: float = 0.30,
        min_words: int = 4,
        cache: int = 4096,
    ) -> None:
        self._embed = embed
        self.threshold = threshold
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

    def unsupported(self, answer: str, passages: Sequence[Passage]) -> list[tuple[int, int, float]]:
        """(start, end, best similarity) of each judged sentence of `answer` below the threshold."""
        spans = self.sentences(answer)
        if not spans:
            return []
        if not passages:
            return [(s, e, 0.0) for s, e in spans]
        missing = [p.text for p in passages if p.vector is None]
        embedded = iter(self._vectors(missing)) if missing else iter(())
        stored = np.stack([np.asarray(p.vector, dtype=np.float32) if p.vector else next(embedded) for p in passages])
        stored /= np.maximum(np.linalg.norm(stored, axis=1, keepdims=True), 1e-12)
        claims = [_CITATION.sub("", answer[s:e]).strip() for s, e in spans]
        best = (self._vectors(claims) @ stored.T).max(axis=1)
        return [(s, e, float(v)) for (s, e), v in zip(spans, best, strict=True) if v < self.threshold]

    def flag(self, answer: str, passages: Sequence[Passage]) -> str:
        """`answer` with `FLAG` after each unsupported sentence."""
        out, at = [], 0
        for _, end, _ in self.unsupported(answer, passages):
            stripped = answer[at:end].rstrip()
            out.append(stripped + FLAG + answer[at + len(stripped) : end])
            at = end
        return "".join(out) + answer[at:]

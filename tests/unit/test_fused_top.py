"""`fused_top`: the cut of a fused ranking whose engine orders equal scores arbitrarily (Qdrant's RRF)."""

from __future__ import annotations

from indexer.store import TIE_MARGIN, SearchQuery, fused_top
from indexer.types import Passage


def hit(chunk_id: str, score: float) -> Passage:
    return Passage(chunk_id=chunk_id, doc_id=chunk_id, source="s.md", text="", score=score, start=0, end=0)


class Engine:
    """A fusion that returns its top n with equal scores in the worst order: highest id first."""

    def __init__(self, hits: list[Passage]) -> None:
        self.hits = sorted(sorted(hits, key=lambda h: h.chunk_id, reverse=True), key=lambda h: -h.score)
        self.asked: list[int] = []

    async def fetch(self, limit: int) -> list[Passage]:
        self.asked.append(limit)
        return self.hits[:limit]


async def test_ties_are_ordered_by_id_and_one_fetch_suffices_when_the_tie_ends_within_the_margin() -> None:
    engine = Engine([hit("a", 0.5), hit("b", 0.5), hit("c", 0.9)] + [hit(f"z{i:02}", 0.1) for i in range(20)])
    hits = await fused_top(SearchQuery(3, candidates=50), engine.fetch)
    assert [h.chunk_id for h in hits] == ["c", "a", "b"]
    assert engine.asked == [3 + TIE_MARGIN]


async def test_a_tie_running_past_the_margin_is_fetched_whole_before_the_cut() -> None:
    tied = [hit(f"t{i:02}", 0.5) for i in range(3 * TIE_MARGIN)]
    engine = Engine([hit("best", 0.9), *tied])
    hits = await fused_top(SearchQuery(3, candidates=50), engine.fetch)
    assert [h.chunk_id for h in hits] == ["best", "t00", "t01"], "the lowest ids of the whole tie, not of a page"
    assert engine.asked == [3 + TIE_MARGIN, 100]

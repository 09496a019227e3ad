"""`ripple index` with the real embedder and real local Qdrant: formats, versions, --gc, --prune; the
report of `ripple eval retrieval`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.integration.conftest import ripple_env, run_ripple, stored

LOADERS = Path(__file__).parent.parent / "fixtures" / "loaders"


def summary(tmp_path: Path, name: str, *args: str, env: dict[str, str]) -> dict[str, object]:
    out = tmp_path / f"{name}.json"
    run_ripple("index", *args, "--quiet", "--json", str(out), env=env)
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def collections(qdrant: Path) -> tuple[str, list[str], list[dict[str, object]]]:
    published, versions, points = stored(qdrant)
    assert published is not None
    return published, versions, [p for _, p in points]


def test_formats_payload_and_per_file_errors(tmp_path: Path) -> None:
    env = ripple_env(tmp_path / "q")
    report = summary(tmp_path, "1", str(LOADERS), env=env)
    added = sorted(Path(str(s)).name for s in report["added"])  # type: ignore[attr-defined]
    assert {"guide.md", "article.html", "outline.pdf"} <= set(added)
    failed = {Path(f["source"]).name: f["error"] for f in report["failed"]}  # type: ignore[attr-defined,index]
    assert "text layer" in failed["scanned.pdf"]
    _, _, payloads = collections(tmp_path / "q")
    pdf = [p for p in payloads if str(p["source"]).endswith("outline.pdf")]
    assert pdf and all(isinstance(p["page"], int) for p in pdf)
    keys = {
        "id",
        "doc_id",
        "source",
        "index",
        "text",
        "start",
        "end",
        "heading",
        "page",
        "content_hash",
        "tenant",
        "indexed_at",
        "embedding_model",
        "chunker",
    }
    assert all(keys <= p.keys() for p in payloads)
    assert {p["embedding_model"] for p in payloads} == {"sentence-transformers/all-MiniLM-L6-v2"}
    assert {p["tenant"] for p in payloads} == {"public"}


def test_a_new_chunker_is_a_new_version_published_when_complete_and_gc_drops_the_old(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(LOADERS, docs, ignore=shutil.ignore_patterns("*.pdf"))
    env = ripple_env(tmp_path / "q")
    first = summary(tmp_path, "1", str(docs), env=env)
    assert first["published_now"] is True
    again = summary(tmp_path, "2", str(docs), env=env)
    assert again["chunks_embedded"] == 0 and again["published_now"] is False

    smaller = {**env, "RIPPLE_CHUNK_MAX_TOKENS": "64", "RIPPLE_CHUNK_OVERLAP_TOKENS": "8"}
    second = summary(tmp_path, "3", str(docs), env=smaller)
    assert second["version"] != first["version"] and second["published_now"] is True
    published, names, payloads = collections(tmp_path / "q")
    assert published == second["version"] and names == sorted([first["version"], second["version"]])
    assert {p["chunker"]["max_tokens"] for p in payloads} == {64}  # type: ignore[index]

    (docs / "guide.md").unlink()
    pruned = summary(tmp_path, "4", str(docs), "--prune", "--gc", env=smaller)
    assert [Path(str(s)).name for s in pruned["deleted"]] == ["guide.md"]  # type: ignore[attr-defined]
    assert pruned["dropped_versions"] == [first["version"]]
    _, names, payloads = collections(tmp_path / "q")
    assert names == [second["version"]]
    assert not any(str(p["source"]).endswith("guide.md") for p in payloads)


def test_eval_retrieval_reports_the_embedder_that_ran(tmp_path: Path) -> None:
    """The JSON report names the vectors' model as the store does: int8 vectors are not MiniLM's own."""
    from tests.unit.test_retrieval_eval import write_beir

    write_beir(tmp_path / "tiny")
    env = ripple_env(tmp_path / "q", RIPPLE_CACHE_DIR=str(tmp_path / "cache"), RIPPLE_EMBED_BACKEND="onnx-int8")
    run_ripple("eval", "retrieval", "--dataset", str(tmp_path / "tiny"), "--json", str(tmp_path / "r.json"), env=env)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["embed_backend"] == "onnx-int8"
    assert report["embedding_model"].startswith("sentence-transformers/all-MiniLM-L6-v2+onnx-int8-")
    assert report["modes"]["hybrid"]["ndcg@10"] == 1.0

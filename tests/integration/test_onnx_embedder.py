"""The ONNX embedders (int8 and fp32) against the PyTorch one they are exported from (the packaged
all-MiniLM-L6-v2).

Each export (about 10 s) happens once per test session, into a pytest temp folder. Skipped, with the
reason shown, where the `onnx` extra (onnx, onnxruntime) or the packaged model is not installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed (pip install -e '.[onnx]')")
pytest.importorskip("onnx", reason="the `onnx` extra is not installed (pip install -e '.[onnx]')")

from indexer.embedder import SentenceTransformerEmbedder  # noqa: E402
from indexer.onnx_embedder import (  # noqa: E402
    MODEL_FILE,
    OnnxEmbedder,
    Quantization,
    detect_quantization,
    export_int8,
    export_onnx,
    exportable,
)

SENTENCES = [
    "The Zorblax protocol keeps lunar clocks in step.",
    "Tomatoes need six hours of sun.",
    "Mitochondrial DNA is inherited from the mother in most animals.",
    "How do I reset my password?",
    "0-dimensional biomaterials show inductive properties.",
    "a",
]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    from runtime.errors import ConfigError
    from runtime.models import packaged_embedder_path

    try:
        return packaged_embedder_path()
    except ConfigError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def export_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_int8(model_dir, tmp_path_factory.mktemp("onnx") / "minilm-int8")


@pytest.fixture(scope="session")
def pair(model_dir: Path, export_dir: Path) -> tuple[SentenceTransformerEmbedder, OnnxEmbedder]:
    fp32 = SentenceTransformerEmbedder(str(model_dir), device="cpu")
    int8 = OnnxEmbedder(model_dir, export_dir)
    fp32.start()
    int8.start()
    return fp32, int8


def test_int8_vectors_are_unit_length_and_close_to_pytorch(
    pair: tuple[SentenceTransformerEmbedder, OnnxEmbedder],
) -> None:
    fp32, int8 = pair
    expected, got = fp32.embed(SENTENCES), int8.embed(SENTENCES)
    assert len(got) == len(SENTENCES) and all(len(v) == int8.dimension == fp32.dimension for v in got)
    for a, b in zip(expected, got, strict=True):
        assert abs(sum(x * x for x in b) - 1.0) < 1e-4
        assert sum(x * y for x, y in zip(a, b, strict=True)) > 0.98
    # Dynamic int8 scales activations per batch, so a text's vector moves a little with its neighbours:
    # embedded alone it must still be as close to the PyTorch vector.
    alone = int8.embed([SENTENCES[2]])[0]
    assert sum(x * y for x, y in zip(alone, expected[2], strict=True)) > 0.98


def test_int8_reads_and_tokenizes_like_pytorch(pair: tuple[SentenceTransformerEmbedder, OnnxEmbedder]) -> None:
    fp32, int8 = pair
    assert int8.max_tokens == fp32.max_tokens
    text = "Héllo wörld, it's 3.5°C: naïve café!  " + "token " * 300
    assert int8.token_offsets(text) == fp32.token_offsets(text)


def test_export_twice_does_not_re_export(model_dir: Path, export_dir: Path) -> None:
    before = (export_dir / MODEL_FILE).stat()
    assert export_int8(model_dir, export_dir) == export_dir
    after = (export_dir / MODEL_FILE).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in export_dir.parent.iterdir()] == [export_dir.name]  # no temp folder left behind


def test_export_made_with_another_config_is_refused(model_dir: Path, export_dir: Path) -> None:
    other: Quantization = "avx2" if detect_quantization() != "avx2" else "avx512_vnni"
    with pytest.raises(ValueError, match="remove the folder"):
        export_int8(model_dir, export_dir, quantization=other)


def test_a_half_written_folder_is_refused_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "notes.txt").write_text("not an export")
    with pytest.raises(FileExistsError, match="remove it"):
        export_int8(tmp_path / "model", tmp_path / "export")
    assert (tmp_path / "export" / "notes.txt").read_text() == "not an export"


def test_constructor_is_cheap_and_model_id_never_the_pytorch_one(tmp_path: Path) -> None:
    embedder = OnnxEmbedder(tmp_path / "no-such-model", tmp_path / "export", name="sentence-transformers/x")
    assert embedder.model_id.startswith("sentence-transformers/x+onnx-int8-")
    assert embedder.model_id != SentenceTransformerEmbedder("sentence-transformers/x").model_id
    assert not (tmp_path / "export").exists()
    with pytest.raises(RuntimeError, match="start"):
        embedder.embed(["nothing loaded yet"])


@pytest.fixture(scope="session")
def fp32_export(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(model_dir, tmp_path_factory.mktemp("onnx") / "minilm-fp32", precision="fp32")


def test_fp32_gives_pytorchs_vectors_and_shares_its_model_id(
    model_dir: Path, fp32_export: Path, pair: tuple[SentenceTransformerEmbedder, OnnxEmbedder]
) -> None:
    """What lets the fp32 backend serve a collection PyTorch built (and the reverse): the same vectors,
    alone or padded in a batch, the same tokens, the same recorded model name."""
    torch_embedder = pair[0]
    onnx = OnnxEmbedder(model_dir, fp32_export, precision="fp32")
    onnx.start()
    assert onnx.model_id == torch_embedder.model_id == str(model_dir)
    expected = torch_embedder.embed(SENTENCES)
    for texts in (SENTENCES, [SENTENCES[2]], [SENTENCES[5]]):
        got = onnx.embed(texts)
        for text, b in zip(texts, got, strict=True):
            a = expected[SENTENCES.index(text)]
            assert sum(x * y for x, y in zip(a, b, strict=True)) > 0.99999
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4
    text = "Héllo wörld, it's 3.5°C: naïve café!  " + "token " * 300
    assert onnx.token_offsets(text) == torch_embedder.token_offsets(text)
    assert onnx.max_tokens == torch_embedder.max_tokens


def test_an_export_of_the_other_precision_is_refused(model_dir: Path, export_dir: Path, fp32_export: Path) -> None:
    with pytest.raises(ValueError, match="holds an ONNX export in int8, not fp32"):
        export_onnx(model_dir, export_dir, precision="fp32")
    with pytest.raises(ValueError, match="holds an ONNX export in fp32, not int8"):
        export_int8(model_dir, fp32_export)


def test_exportable_only_for_a_mean_pooled_local_folder(model_dir: Path, tmp_path: Path) -> None:
    assert exportable(model_dir)
    assert not exportable(tmp_path / "sentence-transformers" / "all-MiniLM-L6-v2")  # a hub id, not a folder

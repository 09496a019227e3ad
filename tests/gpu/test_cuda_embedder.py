"""GPU paths that PyTorch and sentence-transformers cover (vLLM CUDA is exercised by Dockerfile.gpu).

Skipped, with the reason shown, where no CUDA device is present.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_embedder_on_cuda_matches_cpu() -> None:
    from indexer.embedder import SentenceTransformerEmbedder
    from runtime.models import packaged_embedder_path

    texts = ["The Zorblax protocol keeps lunar clocks in step.", "Tomatoes need six hours of sun."]
    cpu = SentenceTransformerEmbedder(str(packaged_embedder_path()), device="cpu")
    gpu = SentenceTransformerEmbedder(str(packaged_embedder_path()), device="cuda")
    cpu.start()
    gpu.start()
    for a, b in zip(cpu.embed(texts), gpu.embed(texts), strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-3


def test_best_dtype_on_a_gpu_is_the_models_own() -> None:
    from runtime.models import best_dtype

    assert best_dtype() == "auto"

"""The in-process engine's arguments, as vLLM itself resolves them (no engine is started: the session's
one engine serves every other integration test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.models import resolve_chat_model
from runtime.settings import Settings
from runtime.vllm_generator import VllmGenerator


@pytest.mark.parametrize("tokens", [0, 4])
def test_ngram_speculation_reaches_vllm_as_prompt_lookup(tokens: int, tmp_path: Path) -> None:
    settings = Settings(speculative_ngram_tokens=tokens, qdrant_path=tmp_path / "qdrant")
    generator = VllmGenerator(
        resolve_chat_model(settings.model, settings.cache_dir),
        served_name=settings.served_model_name,
        dtype="float32",
        speculative_ngram_tokens=settings.speculative_ngram_tokens,
    )
    config = generator.engine_args().create_engine_config()
    spec = config.speculative_config
    if tokens == 0:
        assert spec is None
    else:
        assert spec is not None and spec.method == "ngram" and spec.num_speculative_tokens == tokens
        assert (spec.prompt_lookup_min, spec.prompt_lookup_max) == (2, 4)

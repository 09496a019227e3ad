"""What the in-process engine is given: its arguments, as vLLM itself resolves them, and the prompt's
token ids (no engine is started: the session's one engine serves every other integration test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from runtime.models import resolve_chat_model
from runtime.settings import Settings
from runtime.vllm_generator import VllmGenerator, chat_prompt, prompt_ids


def engine_config(settings: Settings) -> Any:
    """vLLM's resolved config for the engine these settings would start, built as `runtime.components`
    builds the generator (nothing is loaded)."""
    from runtime.components import build_generator

    generator = build_generator(settings)
    assert isinstance(generator, VllmGenerator)
    return generator.engine_args().create_engine_config()


@pytest.mark.parametrize("tokens", [0, 4])
def test_ngram_speculation_reaches_vllm_as_prompt_lookup(tokens: int, tmp_path: Path) -> None:
    settings = Settings(speculative_ngram_tokens=tokens, qdrant_path=tmp_path / "qdrant")
    config = engine_config(settings)
    spec = config.speculative_config
    if tokens == 0:
        assert spec is None
    else:
        assert spec is not None and spec.method == "ngram" and spec.num_speculative_tokens == tokens
        assert (spec.prompt_lookup_min, spec.prompt_lookup_max) == (2, 4)


def test_the_prompt_starts_with_one_bos_where_the_tokenizer_adds_its_own() -> None:
    """A tokenizer that adds a BOS (as Llama's, Mistral's and Gemma's do) to a chat template that starts
    with it: tokenized as vLLM tokenizes a text prompt by default, the prompt started with two. Ripple
    counts and has the engine tokenize with the same `prompt_ids` keywords (`_TEMPLATED`)."""
    from transformers import AutoTokenizer

    folder = resolve_chat_model(None, Settings().cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder, add_bos_token=True)
    bos = tokenizer.bos_token_id
    text = chat_prompt(tokenizer, [{"role": "user", "content": "What is Qdrant?"}])
    assert text.startswith(tokenizer.bos_token)
    assert tokenizer.encode(text)[:2] == [bos, bos], "the tokenizer no longer adds a BOS: this test shows nothing"
    ids = prompt_ids(tokenizer, text)
    assert ids[0] == bos and ids[1] != bos
    assert ids == tokenizer.encode(text)[1:]


async def test_the_engine_tokenizes_the_prompt_as_ripple_counts_it(tmp_path: Path) -> None:
    """What `generate` hands the engine, run through vLLM's own input processing (the step AsyncLLM
    takes before scheduling) with a BOS-adding tokenizer: one BOS, and as many tokens as Ripple counted
    for its limits. Only the model's forward pass is left out; the engine stand-in yields no text."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer
    from vllm.v1.engine.input_processor import InputProcessor

    from runtime.generation import SamplingOptions

    folder = resolve_chat_model(None, Settings().cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder, add_bos_token=True)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    generator = VllmGenerator(folder, served_name="ripple", dtype="float32")
    args = generator.engine_args()
    args.tokenizer = str(tmp_path / "tokenizer")
    processor = InputProcessor(args.create_engine_config())
    bos = tokenizer.bos_token_id
    assert processor.tokenizer.encode(tokenizer.bos_token + "Hi")[:2] == [bos, bos], "no BOS added: shows nothing"
    seen: list[list[int]] = []

    class Engine:
        errored = False

        async def generate(self, prompt: str, params: Any, request_id: str, **kwargs: Any) -> AsyncIterator[Any]:
            request = processor.process_inputs(request_id, prompt, params, ("generate",), **kwargs)
            seen.append(list(request.prompt_token_ids))
            done = SimpleNamespace(text="", token_ids=[], finish_reason="stop")
            yield SimpleNamespace(prompt_token_ids=request.prompt_token_ids, outputs=[done], finished=True)

    generator._engine, generator._tokenizer = Engine(), tokenizer
    messages = [{"role": "user", "content": "What is Qdrant?"}]
    deltas = [d async for d in generator.generate("r1", messages, SamplingOptions(max_tokens=8))]
    (ids,) = seen
    assert ids[0] == bos and ids[1] != bos
    assert deltas[-1].prompt_tokens == len(ids) == await generator.count_prompt_tokens(messages)


@pytest.mark.parametrize("tokens", [None, 512])
def test_the_step_budget_reaches_vllms_scheduler(tokens: int | None, tmp_path: Path) -> None:
    settings = Settings(engine_max_batched_tokens=tokens, qdrant_path=tmp_path / "qdrant")
    scheduler = engine_config(settings).scheduler_config
    assert scheduler.enable_chunked_prefill
    assert scheduler.max_num_batched_tokens == (tokens or 2048), "unset leaves vLLM's CPU default"

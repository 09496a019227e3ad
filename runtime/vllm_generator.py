"""`VllmGenerator`: the Generator role on vLLM's in-process `AsyncLLM` (continuous batching).

The engine starts in `start()` (about 1 min for SmolLM2-135M on 2 CPU cores, most of it torch.compile;
20 s with `enforce_eager`) in worker processes
started with `spawn`; nothing here runs at import. Each request streams `DELTA` outputs; an early
`aclose()` or a cancellation aborts the request in the engine. Multi-modal inputs, LoRA and
n > 1 are deliberately not exposed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from runtime.errors import BadRequestError, EngineFailedError, NotReadyError
from runtime.generation import Delta, Message, SamplingOptions

logger = logging.getLogger(__name__)


def chat_prompt(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The model's chat template applied to `messages`, ready for the answer."""
    return str(tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True))


# A rendered chat template already starts with the model's special tokens, so it is tokenized without
# the tokenizer's own: vLLM tokenizes a text prompt with them by default, and a tokenizer that adds a BOS
# (Llama's, Mistral's, Gemma's) would start the prompt with two. vLLM's chat endpoint does the same.
_TEMPLATED = {"add_special_tokens": False}


_INLINE_CHARS = 16_384


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """`text`, a rendered chat template, as the engine tokenizes it."""
    return list(tokenizer.encode(text, **_TEMPLATED))


class VllmGenerator:
    def __init__(
        self,
        model: str,
        *,
        served_name: str,
        dtype: str = "float32",
        max_model_len: int = 4096,
        enforce_eager: bool = False,
        gpu_memory_utilization: float = 0.85,
        cpu_kv_cache_gb: float = 2.0,
        cpu_reserved_cores: int | None = None,
        speculative_ngram_tokens: int = 0,
        max_batched_tokens: int | None = None,
    ) -> None:
        self._model = model
        self._served_name = served_name
        self._dtype = dtype
        self.max_model_len = max_model_len
        self._enforce_eager = enforce_eager
        self._gpu_memory_utilization = gpu_memory_utilization
        self._cpu_kv_cache_gb = cpu_kv_cache_gb
        self._cpu_reserved_cores = cpu_reserved_cores
        self._speculative_ngram_tokens = speculative_ngram_tokens
        self._max_batched_tokens = max_batched_tokens
        self._engine: Any = None
        self._tokenizer: Any = None

    @property
    def model_id(self) -> str:
        return self._served_name

    @property
    def ready(self) -> bool:
        return self._engine is not None and not self._engine.errored

    @property
    def healthy(self) -> bool:
        return self.ready

    async def start(self) -> None:
        from vllm.v1.engine.async_llm import AsyncLLM

        # vLLM's GPU workers post usage reports to vLLM's project unless told not to; as for NeMo's (see
        # guards/nemo.py), off unless VLLM_NO_USAGE_STATS=0 is set.
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        # vLLM's CPU build sizes its KV cache from this variable (GiB); GPU builds ignore it.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self._cpu_kv_cache_gb:g}")
        # ... and binds its worker's threads from this one: how many cores to leave to other processes.
        if self._cpu_reserved_cores is not None:
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", str(self._cpu_reserved_cores))
            if os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0":
                logger.info(
                    "vLLM's CPU worker computes on every core (RIPPLE_ENGINE_CPU_RESERVED_CORES=0, the default on "
                    "2 cores): vLLM's warning that VLLM_CPU_NUM_OF_RESERVED_CPU is below its minimum is expected"
                )
        self._engine = AsyncLLM.from_engine_args(self.engine_args())
        self._tokenizer = self._engine.get_tokenizer()
        logger.info(
            "vLLM engine ready: %s (%s)%s",
            self._model,
            self._dtype,
            f", n-gram speculation of {self._speculative_ngram_tokens} tokens"
            if self._speculative_ngram_tokens
            else "",
        )

    def engine_args(self) -> Any:
        """vLLM's `AsyncEngineArgs` for this engine (cheap: nothing is loaded until the engine starts)."""
        from vllm.engine.arg_utils import AsyncEngineArgs

        speculative = None
        if self._speculative_ngram_tokens:
            # Drafts come from the last 2-4 tokens' earlier occurrence in the prompt or the answer so far.
            speculative = {
                "method": "ngram",
                "num_speculative_tokens": self._speculative_ngram_tokens,
                "prompt_lookup_min": 2,
                "prompt_lookup_max": 4,
            }
        return AsyncEngineArgs(
            model=self._model,
            served_model_name=[self._served_name],
            dtype=self._dtype,  # type: ignore[arg-type]
            max_model_len=self.max_model_len,
            enforce_eager=self._enforce_eager,
            gpu_memory_utilization=self._gpu_memory_utilization,
            speculative_config=speculative,
            max_num_batched_tokens=self._max_batched_tokens,
            disable_log_stats=False,
            enable_log_requests=False,
        )

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    def _prompt(self, messages: Sequence[Message]) -> str:
        if self._tokenizer is None:
            raise NotReadyError("the engine is not started")
        return chat_prompt(self._tokenizer, messages)

    async def count_prompt_tokens(self, messages: Sequence[Message]) -> int | None:
        def count() -> int:
            return len(prompt_ids(self._tokenizer, self._prompt(messages)))

        # A long conversation is templated and tokenized off the event loop (1 MiB takes it for a while); a
        # short one in place, where it takes well under a millisecond and a thread would cost more.
        if sum(len(m["content"]) for m in messages) > _INLINE_CHARS:
            return await asyncio.to_thread(count)
        return count()

    def unfinished_requests(self) -> int | None:
        return None if self._engine is None else int(self._engine.get_num_unfinished_requests())

    async def generate(
        self, request_id: str, messages: Sequence[Message], options: SamplingOptions
    ) -> AsyncGenerator[Delta, None]:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        if not self.ready:
            raise NotReadyError("the vLLM engine is not running")
        extra: dict[str, Any] = {}
        for name in (
            "temperature",
            "top_p",
            "seed",
            "top_k",
            "min_tokens",
            "repetition_penalty",
            "presence_penalty",
            "frequency_penalty",
        ):
            value = getattr(options, name)
            if value is not None:
                extra[name] = value
        try:
            params = SamplingParams(
                max_tokens=options.max_tokens,
                stop=list(options.stop) or None,
                ignore_eos=options.ignore_eos,
                output_kind=RequestOutputKind.DELTA,
                **extra,
            )
        except (ValueError, VLLMClientError) as exc:  # VLLMClientError is vLLM's own validation (not a ValueError)
            raise BadRequestError(f"invalid sampling parameters: {exc}") from exc
        prompt = self._prompt(messages)
        completion_tokens = 0
        prompt_tokens: int | None = None
        finished = False
        try:
            # vLLM tokenizes the text off the event loop; a fresh dict, since it consumes the keys it reads.
            async for out in self._engine.generate(prompt, params, request_id, tokenization_kwargs=dict(_TEMPLATED)):
                if prompt_tokens is None and out.prompt_token_ids is not None:
                    prompt_tokens = len(out.prompt_token_ids)
                choice = out.outputs[0]
                completion_tokens += len(choice.token_ids)
                finished = out.finished
                yield Delta(
                    text=choice.text,
                    finish_reason=(choice.finish_reason or "stop") if out.finished else None,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                )
        except EngineDeadError as exc:
            logger.error("the vLLM engine died; /ready now answers 503")
            raise EngineFailedError(
                "the engine stopped while generating this answer; the server is not ready until it is restarted"
            ) from exc
        except (ValueError, VLLMClientError) as exc:  # vLLM's input validation (e.g. prompt longer than the context)
            raise BadRequestError(str(exc)) from exc
        finally:
            if not finished and self._engine is not None and not self._engine.errored:
                # Shielded: a cancelled client must not cancel the abort that frees its engine slot.
                await asyncio.shield(self._engine.abort(request_id))

"""`Settings`: the runtime's whole configuration, from `RIPPLE_*` variables and an optional TOML file.

Precedence: explicit arguments, then environment, then the TOML file named by `RIPPLE_CONFIG`
(or `--config`), then defaults. Bad values are refused at start-up with a message that names the
variable to change. Secrets are `SecretStr` and never logged.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from guards import DEFAULT_CONFIG as DEFAULT_GUARDS_CONFIG
from indexer.chunker import ChunkerSettings
from indexer.retriever import RetrievalSettings
from runtime.models import best_dtype, default_cache_dir

_COLLECTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RIPPLE_", extra="forbid", validate_default=True)

    # Serving
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    served_model_name: str = Field("ripple", description="The model id clients pass as `model`.")

    max_concurrent_requests: int = Field(
        64, ge=1, description="Chat requests in flight at once; more get 429 with Retry-After before any work."
    )
    max_waiting_requests: int = Field(
        16,
        ge=1,
        description="Admitted chat requests that have no token yet (in retrieval, rails, the engine's queue or "
        "prefill); past it, 429 with Retry-After before any work. Bounds the queue in front of the engine.",
    )
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM: how long open requests may run to completion while new ones get 503; then exit.",
    )
    max_request_kb: int = Field(
        1024, ge=1, description="Largest request body, in KiB, except uploads (RIPPLE_MAX_UPLOAD_MB); larger: 413."
    )
    max_messages: int = Field(256, ge=1, description="Most messages in one chat request; more: 400.")
    request_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Deadline of a chat request from its arrival: past it, generation is aborted and the client "
        "gets a 504 (or, once a stream has started, an error event).",
    )

    # Models
    model: str | None = Field(None, description="Chat model folder or hub id; default: packaged SmolLM2-135M-Instruct.")
    embed_model: str | None = Field(
        None, description="sentence-transformers folder or id; default: packaged all-MiniLM-L6-v2."
    )
    embed_device: str | None = Field(None, description="cpu, cuda; default: what sentence-transformers picks.")
    embed_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto",
        description="torch: sentence-transformers; onnx: an fp32 ONNX Runtime export, made once into the cache "
        "(CPU only, PyTorch's vectors, ~3x less CPU per query); onnx-int8: an int8 export (its own vectors); "
        "auto: onnx on the CPU when the model can be exported, else torch.",
    )
    embed_coalesce: bool = Field(
        True,
        description="The server's small embedding calls (queries, answer sentences) that overlap share one model "
        "call; false: each runs on its own.",
    )
    cache_dir: Path = Field(default_factory=default_cache_dir)

    # Engine (in-process vLLM) or a remote OpenAI-compatible pool
    upstream_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="OpenAI-compatible base URLs (e.g. a vLLM pool); when set, no in-process engine is started.",
    )
    upstream_api_key: SecretStr | None = None
    upstream_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Upstream mode: the longest wait for a connection or for the next bytes of an answer; a stream "
        "that stalls longer ends with an error event.",
    )
    upstream_retries: int = Field(
        2,
        ge=0,
        description="Upstream mode: retries of a failed connection, timeout, 429 or 5xx, each on the next server "
        "that is up, only before the stream starts (never after text was sent).",
    )
    upstream_probe_s: float = Field(
        5.0,
        ge=0,
        description="Upstream mode: how often each server is asked for its models, so one that stops answering is "
        "set aside before a request finds out and one that answers again is back at once; 0 turns the probe off.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="auto: bfloat16 on CPUs with native bf16 (AVX512-BF16/AMX), else float32; GPUs: the model's.",
    )
    max_model_len: int = Field(4096, ge=256)
    kv_cache_gb: float = Field(2.0, gt=0)
    engine_cpu_reserved_cores: int | None = Field(
        None,
        ge=0,
        description="vLLM's CPU build: cores its engine worker leaves to other processes (vLLM's "
        "VLLM_CPU_NUM_OF_RESERVED_CPU, which wins when set; vLLM itself reserves one, for its scheduler). "
        "Unset: 0 where this process may run on 2 cores or fewer, so the worker computes on both; vLLM's "
        "own choice above that. GPU builds ignore it.",
    )
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    enforce_eager: bool = Field(
        False,
        description="Run the model eagerly: no torch.compile, no CUDA graphs. Off (vLLM's own default), the "
        "engine compiles at start (about 37 s more for the default model on 2 CPU cores) and then decodes "
        "faster: 1.09x output tokens/s at 1 stream, 1.12x at 8 (benchmarks.ab_load).",
    )
    engine_max_batched_tokens: int | None = Field(
        None,
        ge=256,
        le=1 << 20,
        description="vLLM's max_num_batched_tokens: the tokens one engine step may carry; a longer prompt is "
        "prefilled in chunks of this size alongside the running answers. Unset: vLLM's default (2048 on "
        "CPU). Smaller steps shorten the wait of the running answers behind a new prompt's prefill.",
    )
    speculative_ngram_tokens: int = Field(
        0,
        ge=0,
        le=16,
        description="Prompt-lookup (n-gram) speculative decoding in the in-process engine: up to this many "
        "draft tokens per step, copied from where the last tokens already occur in the prompt (RAG answers "
        "quote their sources), checked by the model in one pass; 0: off. Greedy answers keep their text up "
        "to the engine's own rounding.",
    )

    # Retrieval
    qdrant_path: Path | None = Path(".ripple/qdrant")
    qdrant_engine: Literal["edge", "local"] = Field(
        "edge",
        description="For RIPPLE_QDRANT_PATH: edge (Qdrant Edge, the Rust engine in-process) or local "
        "(qdrant-client's pure-Python local mode). Ignored with RIPPLE_QDRANT_URL.",
    )
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    collection: str = "ripple-docs"
    top_k: int = Field(4, ge=1, le=50)
    retrieval_mode: Literal["dense", "sparse", "hybrid"] = Field(
        "hybrid", description="dense (embeddings), sparse (BM25 terms) or hybrid (both, fused in Qdrant)."
    )
    retrieval_candidates: int = Field(100, ge=1, le=1000, description="Results each side brings to hybrid fusion.")
    rrf_k: int = Field(60, ge=1, description="The k of reciprocal rank fusion: higher flattens the rankings.")
    fusion_dense_weight: float = Field(
        1.0, gt=0, le=10, description="The dense ranking's weight in hybrid fusion; the sparse ranking's is 1."
    )

    # Indexing
    chunk_max_tokens: int = Field(200, ge=16, description="Chunk size in the embedding model's tokens.")
    chunk_overlap_tokens: int = Field(32, ge=0, description="Tokens repeated between neighbouring chunks.")
    embed_batch_size: int = Field(256, ge=1, description="Chunks embedded per batch while indexing.")
    tenant: str = Field("public", description="Tenant stored with every chunk indexed by this process.")
    upload_dir: Path = Field(Path(".ripple/uploads"), description="Where POST /v1/documents keeps uploaded files.")
    max_upload_mb: int = Field(50, ge=1, description="Largest file POST /v1/documents accepts.")

    # Generation limits
    default_max_tokens: int = Field(256, ge=1)
    max_tokens_limit: int = Field(1024, ge=1)
    system_prompt: str = (
        "You are Ripple's assistant. Answer the question using only the numbered sources below. "
        "Cite the sources you use as [1], [2]. If the sources do not contain the answer, say so."
    )

    # Rails
    guards_enabled: bool = True
    guards_config: Path = DEFAULT_GUARDS_CONFIG
    guards_direct: bool = Field(
        True,
        description="Run Ripple's own input and output flows, when the config's flows for that rail type are all "
        "of them and unchanged, as their actions through NeMo's action dispatcher (no Colang run); false: every "
        "check goes through NeMo's check_async.",
    )
    stream_first_window_chars: int = Field(
        1,
        ge=1,
        description="The first streamed window's size (1: the first whole word); later windows double up to "
        "stream_window_chars.",
    )
    stream_window_chars: int = Field(
        40, ge=1, description="Streamed text is released in windows of this size after the output rails pass them."
    )
    stream_early_check: bool = Field(
        True,
        description="Check the first window's word while the engine generates the next token (a check is wasted "
        "when that token continues the word); false: its check starts when the token shows the word ended.",
    )

    log_json: bool = Field(False, description="Log JSON lines (production); also `ripple --log-json`.")

    def retrieval(self) -> RetrievalSettings:
        return RetrievalSettings(
            mode=self.retrieval_mode,
            candidates=self.retrieval_candidates,
            rrf_k=self.rrf_k,
            dense_weight=self.fusion_dense_weight,
        )

    def chunker(self) -> ChunkerSettings:
        return ChunkerSettings(max_tokens=self.chunk_max_tokens, overlap_tokens=self.chunk_overlap_tokens)

    def resolved_dtype(self) -> str:
        return self.dtype if self.dtype != "auto" else best_dtype()

    def engine_cpu_reserved(self) -> int | None:
        """The cores vLLM's CPU worker should leave free, or None for vLLM's default (see the field).
        On 2 cores, computing on both gave 1.23x (1 stream) and 1.28x (8 streams) the output-token
        throughput of vLLM's default with the rails' work on the same cores (benchmarks/ab_load.py)."""
        if self.engine_cpu_reserved_cores is not None:
            return self.engine_cpu_reserved_cores
        # The cores this process may run on (a container's cpuset); platforms without affinity: all.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return 0 if cores <= 2 else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        toml = os.environ.get("RIPPLE_CONFIG")
        if toml:
            if not Path(toml).is_file():
                raise ValueError(f"RIPPLE_CONFIG names {toml}, which is not a file")
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=toml),)
        return sources

    @field_validator("upstream_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [u.strip() for u in value.split(",") if u.strip()]
        return value

    @field_validator("collection")
    @classmethod
    def _check_collection(cls, value: str) -> str:
        if not _COLLECTION.fullmatch(value):
            raise ValueError(
                f"RIPPLE_COLLECTION {value!r} is not a collection name: use letters, digits, '_', '-' and '.', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("upstream_urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"RIPPLE_UPSTREAM_URLS entry {url!r} must start with http:// or https://")
        return [u.rstrip("/") for u in value]

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(
                f"RIPPLE_DEFAULT_MAX_TOKENS ({self.default_max_tokens}) exceeds RIPPLE_MAX_TOKENS_LIMIT "
                f"({self.max_tokens_limit}): lower the first or raise the second"
            )
        if self.max_tokens_limit >= self.max_model_len and not self.upstream_urls:
            raise ValueError(
                f"RIPPLE_MAX_TOKENS_LIMIT ({self.max_tokens_limit}) leaves no room for the prompt in "
                f"RIPPLE_MAX_MODEL_LEN ({self.max_model_len})"
            )
        if self.stream_first_window_chars > self.stream_window_chars:
            raise ValueError(
                f"RIPPLE_STREAM_FIRST_WINDOW_CHARS ({self.stream_first_window_chars}) is larger than "
                f"RIPPLE_STREAM_WINDOW_CHARS ({self.stream_window_chars}): lower the first or raise the second"
            )
        if self.chunk_overlap_tokens > self.chunk_max_tokens // 2:
            raise ValueError(
                f"RIPPLE_CHUNK_OVERLAP_TOKENS ({self.chunk_overlap_tokens}) must be at most half of "
                f"RIPPLE_CHUNK_MAX_TOKENS ({self.chunk_max_tokens})"
            )
        if self.speculative_ngram_tokens and self.upstream_urls:
            raise ValueError(
                "RIPPLE_SPECULATIVE_NGRAM_TOKENS applies to the in-process engine only: with RIPPLE_UPSTREAM_URLS "
                "set, unset it and start the vLLM servers with --speculative-config instead"
            )
        if self.engine_max_batched_tokens is not None and self.upstream_urls:
            raise ValueError(
                "RIPPLE_ENGINE_MAX_BATCHED_TOKENS applies to the in-process engine only: with RIPPLE_UPSTREAM_URLS "
                "set, unset it and start the vLLM servers with --max-num-batched-tokens instead"
            )
        if self.qdrant_url is None and self.qdrant_path is None:
            raise ValueError("set RIPPLE_QDRANT_PATH (a local folder) or RIPPLE_QDRANT_URL (a Qdrant server)")
        if self.guards_enabled and not (self.guards_config / "config.yml").is_file():
            raise ValueError(
                f"RIPPLE_GUARDS_CONFIG={self.guards_config} has no config.yml: point it at a NeMo Guardrails "
                "config folder, or set RIPPLE_GUARDS_ENABLED=false"
            )
        return self


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per bad setting, naming its variable (and its key in a RIPPLE_CONFIG file) and the value
    given: pydantic's own report names only the field."""
    lines = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        loc = [str(part) for part in error["loc"]]
        if not loc:  # a check across settings: its message names the variables
            lines.append(message)
            continue
        name = loc[0]
        if name not in Settings.model_fields:
            lines.append(f"{name} (in the RIPPLE_CONFIG file) is not a setting: see docs/configuration.md")
            continue
        where = f"RIPPLE_{name.upper()} ({name})"
        if len(loc) > 1:
            where += f", entry {'.'.join(loc[1:])}"
        given = error.get("input")
        secret = "SecretStr" in str(Settings.model_fields[name].annotation)
        value = "" if secret or error["type"] == "missing" or isinstance(given, dict) else f" = {given!r}"
        lines.append(_USERINFO.sub("***@", f"{where}{value}: {message}"))
    return lines


# The user:password@ of a URL, with or without its scheme (an entry missing "http://" is the likely error).
_USERINFO = re.compile(r"(?:(?<=://)|(?<=['\"\s,\[]))[^\s/@'\",\[\]]+@")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each RIPPLE_ variable that names no setting (pydantic-settings ignores them, so a typo
    would leave the default in force without a word), with the closest setting's name."""
    known = {f"RIPPLE_{name.upper()}" for name in Settings.model_fields} | {"RIPPLE_CONFIG"}
    warnings = []
    for name in sorted(environ):
        if name.startswith("RIPPLE_") and name not in known:
            close = difflib.get_close_matches(name.removeprefix("RIPPLE_"), [k[7:] for k in known], n=1)
            hint = f": did you mean RIPPLE_{close[0]}?" if close else ": see docs/configuration.md"
            warnings.append(f"{name} is not a Ripple setting and is ignored{hint}")
    return warnings

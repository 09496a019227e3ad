"""Build the real components from settings: embedder, Qdrant store, generator, NeMo rails.

Construction is cheap; `start_components` does the heavy work (models, engine, Qdrant) inside
the caller's `AsyncExitStack`, so everything is closed in reverse order however start-up ends.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guards.protocol import Guard
from indexer.chunker import ChunkerSettings
from indexer.edge_store import EdgeStore
from indexer.embedder import CoalescingEmbedder, Embedder, SentenceTransformerEmbedder
from indexer.pipeline import Indexer
from indexer.retriever import QdrantRetriever, RetrievalSettings
from indexer.store import QdrantStore, StoreError, VectorStore
from runtime.generation import Generator, SamplingOptions
from runtime.models import PACKAGED_EMBEDDER_ID, packaged_embedder_path, resolve_chat_model
from runtime.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Components:
    generator: Generator
    embedder: Embedder
    store: VectorStore
    guard: Guard | None
    chunker: ChunkerSettings = field(default_factory=ChunkerSettings)
    tenant: str = "public"
    embed_batch_size: int = 256
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)

    @property
    def retriever(self) -> QdrantRetriever:
        return QdrantRetriever(self.embedder, self.store, settings=self.retrieval)

    @property
    def indexer(self) -> Indexer:
        return Indexer(self.embedder, self.store, self.chunker, tenant=self.tenant, batch_size=self.embed_batch_size)


async def check_collection(components: Components) -> None:
    """Refuse to serve a collection whose vectors come from another embedding model than ours."""
    version = await components.store.published()
    if version is None:
        logger.warning("collection %r has no documents yet: run `ripple index PATH`", components.store.alias)
        return
    sample = await components.store.sample()
    model = sample.get("embedding_model") if sample else None
    if model is not None and model != components.embedder.model_id:
        raise StoreError(
            f"collection {components.store.alias!r} was embedded with {model} but this server embeds queries with "
            f"{components.embedder.model_id}: set RIPPLE_EMBED_MODEL / RIPPLE_EMBED_BACKEND to what built it, "
            "or re-index with `ripple index`"
        )


def embed_backend(settings: Settings) -> str:
    """The embedding backend to run: the one set, or for `auto` the fp32 ONNX export on the CPU (the same
    vectors as PyTorch, for about a third of the CPU time per query) where the model is a local folder it
    can export and the `onnx` extra is installed, and PyTorch elsewhere (a GPU, a hub id, another pooling)."""
    if settings.embed_backend != "auto":
        return settings.embed_backend
    if settings.embed_device not in (None, "cpu"):
        return "torch"
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):  # the `onnx` extra
        return "torch"
    from indexer.onnx_embedder import exportable

    if not exportable(Path(settings.embed_model or packaged_embedder_path())):
        return "torch"
    if settings.embed_device is None:
        import torch

        if torch.cuda.is_available():  # where sentence-transformers would put the model
            return "torch"
    return "onnx"


def build_embedder(settings: Settings, backend: str | None = None) -> Embedder:
    """The embedder `settings` name, run by `backend` (default: `embed_backend(settings)`; a caller that
    also reports the backend resolves it once and passes it)."""
    path = settings.embed_model or str(packaged_embedder_path())
    name = settings.embed_model or PACKAGED_EMBEDDER_ID
    backend = backend or embed_backend(settings)
    if backend in ("onnx", "onnx-int8"):
        from indexer.onnx_embedder import OnnxEmbedder

        folder = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
        if backend == "onnx":
            return OnnxEmbedder(path, settings.cache_dir / "onnx-fp32" / folder, name=name, precision="fp32")
        return OnnxEmbedder(path, settings.cache_dir / "onnx" / folder, name=name)
    return SentenceTransformerEmbedder(path, name=name, device=settings.embed_device)


def build_store(settings: Settings, collection: str | None = None, path: Path | None = None) -> VectorStore:
    """The store settings name: a Qdrant server (URL), else a local folder run by Qdrant Edge or local mode.
    `collection` and `path` override the settings' (the eval command keeps its own cached folder)."""
    name = collection or settings.collection
    if settings.qdrant_url and path is None:
        return QdrantStore(
            name,
            url=settings.qdrant_url,
            api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
        )
    folder = str(path or settings.qdrant_path)
    if settings.qdrant_engine == "edge":
        return EdgeStore(name, path=folder)
    return QdrantStore(name, path=folder)


def build_generator(settings: Settings) -> Generator:
    if settings.upstream_urls:
        from runtime.upstream import OpenAIUpstreamGenerator

        return OpenAIUpstreamGenerator(
            settings.upstream_urls,
            served_name=settings.served_model_name,
            model=settings.model,
            api_key=settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None,
            timeout=settings.upstream_timeout_s,
            max_retries=settings.upstream_retries,
            probe_interval=settings.upstream_probe_s,
        )
    from runtime.vllm_generator import VllmGenerator

    return VllmGenerator(
        resolve_chat_model(settings.model, settings.cache_dir),
        served_name=settings.served_model_name,
        dtype=settings.resolved_dtype(),
        max_model_len=settings.max_model_len,
        enforce_eager=settings.enforce_eager,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        cpu_kv_cache_gb=settings.kv_cache_gb,
        cpu_reserved_cores=settings.engine_cpu_reserved(),
        speculative_ngram_tokens=settings.speculative_ngram_tokens,
        max_batched_tokens=settings.engine_max_batched_tokens,
    )


def chat_function(generator: Generator) -> Any:
    """A chat function over `generator` for the NeMo provider (rails' own LLM calls)."""
    counter = iter(range(1 << 62))

    async def chat(messages: Sequence[dict[str, str]], options: dict[str, Any]) -> AsyncGenerator[str, None]:
        opts = SamplingOptions(
            max_tokens=int(options.get("max_tokens") or 64),
            temperature=options.get("temperature"),
            stop=tuple(options.get("stop") or ()),
        )
        async with aclosing(generator.generate(f"rails-{next(counter)}", [dict(m) for m in messages], opts)) as deltas:
            async for delta in deltas:
                if delta.text:
                    yield delta.text

    return chat


def build_guard(settings: Settings, generator: Generator, embedder: Embedder | None = None) -> Guard | None:
    """NeMo rails; `embedder` (the one that indexes documents) serves the groundedness rails."""
    if not settings.guards_enabled:
        return None
    from guards.nemo import NemoGuard

    return NemoGuard(
        settings.guards_config,
        chat_function(generator),
        model_name=settings.served_model_name,
        embed=embedder.embed if embedder is not None else None,
        direct=settings.guards_direct,
    )


def build_components(settings: Settings) -> Components:
    generator = build_generator(settings)
    backend = embed_backend(settings)
    embedder = build_embedder(settings, backend)
    logger.info("embedder: %s (%s backend)", embedder.model_id, backend)
    # Not with int8, whose vectors depend on their batch.
    if settings.embed_coalesce and backend != "onnx-int8":
        embedder = CoalescingEmbedder(embedder)
    return Components(
        generator=generator,
        embedder=embedder,
        store=build_store(settings),
        guard=build_guard(settings, generator, embedder),
        chunker=settings.chunker(),
        tenant=settings.tenant,
        embed_batch_size=settings.embed_batch_size,
        retrieval=settings.retrieval(),
    )


async def start_components(components: Components, stack: AsyncExitStack) -> None:
    """Start everything (store first: it fails fastest), registering each close on `stack`."""
    import asyncio

    await asyncio.to_thread(components.embedder.start)
    await components.store.start()
    stack.push_async_callback(components.store.close)
    await check_collection(components)
    await components.generator.start()
    stack.push_async_callback(components.generator.close)
    if components.guard is not None:
        await components.guard.start()
        stack.push_async_callback(components.guard.close)

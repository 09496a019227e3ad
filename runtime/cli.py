"""The `ripple` command: `index`, `serve`, `ask`.

Settings come from `RIPPLE_*` variables and the TOML file named by `--config` / `RIPPLE_CONFIG`;
command-line options override both. Nothing heavy happens until a command runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from contextlib import AsyncExitStack, aclosing
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

app = typer.Typer(
    help="Ripple: a RAG serving runtime. Index documents into Qdrant, then serve guarded, cited answers "
    "over the OpenAI chat-completions API. Settings: RIPPLE_* variables or a TOML file (--config).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _settings(**overrides: Any) -> Any:
    from runtime import logs
    from runtime.settings import Settings

    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except (ValidationError, ValueError) as exc:
        typer.secho(f"ripple: bad settings:\n{exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    logs.configure(json_lines=settings.log_json)
    return settings


def _fail(message: str) -> None:
    typer.secho(f"ripple: {message}", fg="red", err=True)
    raise typer.Exit(1)


@app.callback()
def main(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML settings file (same keys as RIPPLE_* without the prefix).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log JSON lines (production).")] = False,
) -> None:
    if config is not None:
        os.environ["RIPPLE_CONFIG"] = str(config)
    if log_json:
        os.environ["RIPPLE_LOG_JSON"] = "true"


@app.command()
def index(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Files or folders: Markdown, text, reStructuredText, HTML, PDF.")
    ] = None,
    collection: Annotated[str | None, typer.Option(help="Collection alias to index into [RIPPLE_COLLECTION].")] = None,
    prune: Annotated[bool, typer.Option("--prune", help="Delete documents under PATHS whose files are gone.")] = False,
    gc: Annotated[
        bool, typer.Option("--gc", help="Drop old versions of the collection (other models or chunkers).")
    ] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the summary as JSON here.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Embed documents into Qdrant, incrementally: unchanged files are skipped, changed files replace their
    old chunks. A new embedding model or chunker builds a new version of the collection, published
    atomically when complete; the old one is kept until --gc."""
    from tqdm import tqdm

    from indexer.pipeline import Indexer, walk
    from indexer.store import StoreError
    from runtime.components import build_embedder, build_store
    from runtime.errors import ConfigError

    if not paths and not gc:
        _fail("give PATH(s) to index, or --gc")
    settings = _settings(collection=collection)

    async def run() -> dict[str, Any]:
        embedder = build_embedder(settings)
        store = build_store(settings)
        await asyncio.to_thread(embedder.start)
        await store.start()
        indexer = Indexer(
            embedder, store, settings.chunker(), tenant=settings.tenant, batch_size=settings.embed_batch_size
        )
        report: dict[str, Any] = {}
        try:
            if paths:
                total = sum(1 for _ in walk(paths, []))
                with tqdm(total=total, unit="file", disable=quiet, dynamic_ncols=True) as bar:
                    started = time.perf_counter()

                    def progress(files: int, chunks: int) -> None:
                        bar.update(files - bar.n)
                        rate = chunks / max(time.perf_counter() - started, 1e-9)
                        bar.set_postfix(chunks=chunks, chunks_s=f"{rate:.1f}")

                    report = (await indexer.run(paths, prune=prune, progress=progress)).as_dict()
            if gc:
                report["dropped_versions"] = await indexer.gc()
            return report
        finally:
            await store.close()

    try:
        summary = asyncio.run(run())
    except (StoreError, ConfigError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if paths:
        typer.echo(
            f"{summary['collection']} -> {summary['version']}"
            + (" (published now)" if summary["published_now"] else "")
            + f"\n  added {len(summary['added'])}, updated {len(summary['updated'])}, "
            f"unchanged {len(summary['unchanged'])}, deleted {len(summary['deleted'])}, failed {len(summary['failed'])}"
            f"\n  {summary['chunks_embedded']} chunks embedded in {summary['seconds']:.1f} s"
        )
        for failure in summary["failed"]:
            typer.echo(f"  failed: {failure['source']}: {failure['error']}")
    for version in summary.get("dropped_versions", []):
        typer.echo(f"  dropped old version {version}")
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2))


@app.command()
def prepare() -> None:
    """Make the models ready offline: convert the packaged chat model once (cached) and find the embedder."""
    from runtime.errors import ConfigError
    from runtime.models import packaged_embedder_path, resolve_chat_model

    settings = _settings()
    try:
        chat = resolve_chat_model(settings.model, settings.cache_dir)
        embed = settings.embed_model or str(packaged_embedder_path())
    except ConfigError as exc:
        _fail(exc.message)
    typer.echo(f"chat model: {chat}\nembedding model: {embed}\nvLLM dtype here: {settings.resolved_dtype()}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind [RIPPLE_HOST, default 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [RIPPLE_PORT, default 8000].")] = None,
) -> None:
    """Serve the OpenAI-compatible API (POST /v1/chat/completions) with retrieval and rails."""
    import uvicorn

    from runtime.app import create_app

    settings = _settings(host=host, port=port)
    # uvicorn drains on SIGTERM, then re-raises the signal with the previous handler in place; a
    # handler that does nothing makes a completed drain exit 0, as process supervisors expect.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=10
    )


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer from the indexed documents.")],
    max_tokens: Annotated[int | None, typer.Option(help="Longest answer, in tokens.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Answer one question with its sources, in this process (no server needed)."""
    from indexer.store import StoreError
    from runtime.chat import ChatService, FinishEvent, TextEvent
    from runtime.components import build_components, start_components
    from runtime.errors import RippleError
    from runtime.metrics import Metrics
    from runtime.schemas import ChatCompletionRequest

    settings = _settings()

    async def run() -> None:
        parts = build_components(settings)
        async with AsyncExitStack() as stack:
            await start_components(parts, stack)
            service = ChatService(settings, parts.generator, parts.retriever, parts.guard, Metrics())
            request = ChatCompletionRequest.model_validate(
                {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens}
            )
            prepared = await service.prepare(request)
            text, finish = [], None
            async with aclosing(service.events(prepared, "ask", stream=not as_json)) as events:
                async for ev in events:
                    if isinstance(ev, TextEvent):
                        text.append(ev.text)
                        if not as_json:
                            sys.stdout.write(ev.text)
                            sys.stdout.flush()
                    elif isinstance(ev, FinishEvent):
                        finish = ev
        assert finish is not None
        sources = [
            {"index": i, "source": p.source, "heading": p.heading, "chunk_id": p.chunk_id, "score": round(p.score, 4)}
            for i, p in enumerate(finish.citations, start=1)
        ]
        if as_json:
            typer.echo(
                json.dumps(
                    {"answer": "".join(text), "finish_reason": finish.finish_reason, "sources": sources}, indent=2
                )
            )
            return
        typer.echo(f"\n\n[finish: {finish.finish_reason}]")
        for s in sources:
            where = f"{s['source']} > {s['heading']}" if s["heading"] else s["source"]
            typer.echo(f"[{s['index']}] {where} (score {s['score']})")

    try:
        asyncio.run(run())
    except RippleError as exc:
        _fail(exc.message)
    except StoreError as exc:
        _fail(str(exc))

"""The `ripple` command: `prepare`, `index`, `serve`, `ask`, `eval retrieval`, `eval guards`.

Settings come from `RIPPLE_*` variables and the TOML file named by `--config` / `RIPPLE_CONFIG`;
command-line options override both. Nothing heavy happens until a command runs.
"""

from __future__ import annotations

import asyncio
import json
import os
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
    from runtime.settings import Settings, describe_errors, unknown_variables

    for warning in unknown_variables(os.environ):
        typer.secho(f"ripple: warning: {warning}", fg="yellow", err=True)

    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except (ValidationError, ValueError) as exc:
        lines = describe_errors(exc) if isinstance(exc, ValidationError) else [str(exc)]
        typer.secho("ripple: bad settings:\n" + "\n".join(f"  {line}" for line in lines), fg="red", err=True)
        raise typer.Exit(2) from exc
    logs.configure(json_lines=settings.log_json)
    return settings


def _fail(message: str) -> None:
    typer.secho(f"ripple: {message}", fg="red", err=True)
    raise typer.Exit(1)


def _check_json_target(path: Path | None) -> None:
    """Refuse a --json path that cannot be written before any work is done (a long run's results would be
    lost to a traceback at the end)."""
    if path is None:
        return
    if str(path) == "-":
        _fail("--json takes a file path (- for standard output is not supported): give a file name")
    if path.is_dir():
        _fail(f"--json {path} is a folder: give a file path")
    if not path.absolute().parent.is_dir():
        _fail(f"--json {path}: the folder {path.absolute().parent} does not exist")


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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (for scripts and logs).")] = False,
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
    _check_json_target(json_path)
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


eval_app = typer.Typer(help="Measure retrieval and rails on labelled data.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("retrieval")
def eval_retrieval(
    dataset: Annotated[Path | None, typer.Option(help="A BEIR-format folder (corpus.jsonl, queries, qrels/).")] = None,
    squad: Annotated[Path | None, typer.Option(help="A SQuAD v1.1 JSON file instead of --dataset.")] = None,
    split: Annotated[str, typer.Option(help="BEIR qrels split: qrels/SPLIT.tsv.")] = "test",
    modes: Annotated[str, typer.Option(help="Comma-separated: dense, sparse, hybrid.")] = "dense,sparse,hybrid",
    max_queries: Annotated[
        int | None,
        typer.Option(min=1, help="At most this many queries: the first by id (--dataset), an even sample (--squad)."),
    ] = None,
    whole_documents: Annotated[
        bool,
        typer.Option(
            "--whole-documents",
            help="One chunk per document, cut where the embedding model stops reading, as the published "
            "single-vector baselines index a corpus (instead of Ripple's chunking).",
        ),
    ] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
) -> None:
    """nDCG@10, recall@10/100, MRR@10 and latency per retrieval mode. The corpus is indexed once into a
    cached local Qdrant folder under the cache directory; later runs embed nothing."""
    from indexer.evaluation import evaluate, load_beir, load_squad
    from indexer.evaluation import whole_documents as whole_documents_setup
    from indexer.pipeline import Indexer
    from indexer.retriever import QdrantRetriever
    from indexer.store import StoreError
    from runtime.components import build_embedder, build_store, embed_backend
    from runtime.errors import ConfigError

    if (dataset is None) == (squad is None):
        _fail("give exactly one of --dataset DIR or --squad FILE")
    _check_json_target(json_path)
    wanted = [m.strip() for m in modes.split(",") if m.strip()]
    if not wanted or any(m not in ("dense", "sparse", "hybrid") for m in wanted):
        _fail(f"--modes takes dense, sparse and hybrid, not {modes!r}")
    settings = _settings()
    try:
        data = load_squad(squad, max_queries) if squad else load_beir(dataset, split)  # type: ignore[arg-type]
    except (OSError, ValueError, KeyError) as exc:  # a missing file, bad JSON (a ValueError), a missing field
        _fail(f"cannot read {squad or dataset}: {exc}")
    if dataset is not None and max_queries is not None:
        keep = sorted(data.queries)[:max_queries]
        data = type(data)(data.name, data.corpus, {q: data.queries[q] for q in keep}, {q: data.qrels[q] for q in keep})
    backend = embed_backend(settings)

    async def run() -> dict[str, Any]:
        embedder = build_embedder(settings, backend)
        await asyncio.to_thread(embedder.start)
        folder = settings.cache_dir / "eval" / f"{data.name}-{settings.qdrant_engine}"
        store = build_store(settings, "eval", folder)
        await store.start()
        try:
            indexer = Indexer(embedder, store, settings.chunker(), batch_size=settings.embed_batch_size)
            cut = None
            if whole_documents:
                indexer.chunker, cut = whole_documents_setup(indexer)
            retriever = QdrantRetriever(embedder, store, settings=settings.retrieval())
            results = await evaluate(data, indexer, retriever, wanted, cut=cut)  # type: ignore[arg-type]
            return {**results, "_model": embedder.model_id}
        finally:
            await store.close()

    try:
        results = asyncio.run(run())
    except (StoreError, ConfigError) as exc:
        _fail(str(exc))
    index = results.pop("_index")
    model = results.pop("_model")
    typer.echo(f"{data.name}: {index['documents']} documents, {len(data.queries)} queries ({index['version']})")
    typer.echo(f"{'mode':<8} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'p50 ms':>7} {'p95 ms':>7}")
    for mode, r in results.items():
        typer.echo(
            f"{mode:<8} {r['ndcg@10']:>8.4f} {r['recall@10']:>7.4f} {r['recall@100']:>7.4f} {r['mrr@10']:>7.4f}"
            f" {r['latency_p50_ms']:>7.1f} {r['latency_p95_ms']:>7.1f}"
        )
    if json_path is not None:
        report = {
            "dataset": data.name,
            "split": split if dataset else None,
            "index": index,
            "modes": results,
            "embedding_model": model,
            "embed_backend": backend,
            "rrf_k": settings.rrf_k,
            "dense_weight": settings.fusion_dense_weight,
            "whole_documents": whole_documents,
            "store": settings.qdrant_engine,
            "candidates": settings.retrieval_candidates,
        }
        json_path.write_text(json.dumps(report, indent=2))


@eval_app.command("guards")
def eval_guards(
    dataset: Annotated[
        Path,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="JSONL or CSV with `text` and `label` (1 = attack); XSTest's xstest_prompts.csv and "
            "JailbreakBench's benign-/harmful-behaviors.csv are recognised by their headers.",
        ),
    ],
    text_column: Annotated[str | None, typer.Option(help="The text column, when not text/prompt/goal.")] = None,
    label_column: Annotated[
        str | None, typer.Option(help="The label column, when not `label` (1/0, attack/benign, unsafe/safe).")
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
) -> None:
    """Detection rate, false-positive rate and latency p50/p95 of the input rails: each check alone, and the
    whole input rail through NeMo Guardrails (the rails config of RIPPLE_GUARDS_CONFIG, local rails only)."""
    from guards.evaluation import evaluate_input_rails, load_labelled, no_llm, table
    from guards.nemo import NemoGuard

    _check_json_target(json_path)
    settings = _settings()
    try:
        data = load_labelled(dataset, text_column, label_column)
    except (ValueError, KeyError) as exc:
        _fail(str(exc))

    async def run() -> dict[str, Any]:
        guard = NemoGuard(settings.guards_config, no_llm, direct=settings.guards_direct)
        await guard.start()
        try:
            return await evaluate_input_rails(data, guard)
        finally:
            await guard.close()

    try:
        report = asyncio.run(run())
    except FileNotFoundError as exc:
        _fail(str(exc))
    typer.echo(table(report))
    report["guards_config"] = str(settings.guards_config)
    report["machine"] = f"{os.cpu_count()} CPU cores"
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2))
    typer.echo(json.dumps({k: report[k] for k in ("detection_rate", "false_positive_rate")}))


@app.command()
def prepare() -> None:
    """Make the models ready offline: convert the packaged chat model once (cached), find the embedder and
    export it to ONNX once (cached) when its backend is an ONNX one."""
    from runtime.components import build_embedder, embed_backend
    from runtime.errors import ConfigError
    from runtime.models import packaged_embedder_path, resolve_chat_model

    settings = _settings()
    try:
        chat = resolve_chat_model(settings.model, settings.cache_dir)
        embed = settings.embed_model or str(packaged_embedder_path())
    except ConfigError as exc:
        _fail(exc.message)
    backend = embed_backend(settings)
    try:
        build_embedder(settings, backend).start()
    except (OSError, ValueError) as exc:  # an export folder of another kind, a model that cannot be exported
        _fail(f"the embedding model could not be prepared: {exc}")
    typer.echo(
        f"chat model: {chat}\nembedding model: {embed} ({backend} backend)\n"
        f"vLLM dtype here: {settings.resolved_dtype()}"
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind [RIPPLE_HOST, default 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [RIPPLE_PORT, default 8000].")] = None,
) -> None:
    """Serve the OpenAI-compatible API (POST /v1/chat/completions) with retrieval and rails."""
    from runtime.app import create_app
    from runtime.server import StartUpError
    from runtime.server import serve as run_server

    settings = _settings(host=host, port=port)
    _check_port(settings.host, settings.port)
    try:
        run_server(create_app(settings), settings)
    except StartUpError as exc:
        _fail(f"cannot start: {exc}")


def _check_port(host: str, port: int) -> None:
    """Fail at once when the port is taken: uvicorn binds it only after the engine has started (a minute)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}): stop what holds it, or set RIPPLE_PORT")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer from the indexed documents.")],
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Longest answer, in tokens.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Answer one question with its sources, in this process (no server needed)."""
    if not question.strip():
        _fail("the question is empty: give the question to answer")
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

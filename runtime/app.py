"""`create_app(settings, components=None)`: the FastAPI app, its lifespan and nothing global.

The lifespan builds (or takes) the components, starts them in an `AsyncExitStack` and closes them
in reverse order at shutdown. Tests pass fakes as `components`; production builds the real ones.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from indexer.pipeline import Indexer
from runtime import logs
from runtime.admission import Admission
from runtime.api import install_error_handlers, router
from runtime.chat import ChatService
from runtime.components import Components, build_components, start_components
from runtime.documents_api import router as documents_router
from runtime.jobs import JobRunner
from runtime.metrics import Metrics
from runtime.settings import Settings


def create_app(settings: Settings, *, components: Components | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        parts = components or build_components(settings)
        metrics = Metrics()
        async with AsyncExitStack() as stack:
            await start_components(parts, stack)
            metrics.watch_engine(parts.generator.unfinished_requests)
            indexer = parts.indexer
            jobs = JobRunner(lambda paths, progress: _index(indexer, paths, progress))
            await jobs.start()
            stack.push_async_callback(jobs.close)
            app.state.settings, app.state.indexer, app.state.jobs = settings, indexer, jobs
            app.state.admission = Admission(settings.max_concurrent_requests, metrics)
            app.state.service = ChatService(settings, parts.generator, parts.retriever, parts.guard, metrics)
            app.state.readiness = lambda: {
                "engine": parts.generator.ready,
                "store": parts.store.ready,
                "rails": parts.guard.ready if parts.guard is not None else True,
            }
            yield

    app = FastAPI(title="Ripple", version="0.1.0", lifespan=lifespan)
    app.include_router(router)
    app.include_router(documents_router)
    install_error_handlers(app)

    app.add_middleware(RequestIdMiddleware)
    return app


async def _index(indexer: Indexer, paths: list[Path], progress: Callable[[int, int], None]) -> dict[str, Any]:
    return (await indexer.run(paths, progress=progress)).as_dict()


class RequestIdMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware, which interferes with streaming and disconnects)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex
        token = logs.request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-Id"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)

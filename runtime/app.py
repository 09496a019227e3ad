"""`create_app(settings, components=None)`: the FastAPI app, its lifespan and nothing global.

The lifespan builds (or takes) the components, starts them in an `AsyncExitStack` and closes them
in reverse order at shutdown. Tests pass fakes as `components`; production builds the real ones.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from indexer.pipeline import Indexer
from indexer.store import StoreError
from runtime import logs
from runtime.admission import Admission
from runtime.api import install_error_handlers, router
from runtime.chat import ChatService
from runtime.components import Components, build_components, start_components
from runtime.documents_api import router as documents_router
from runtime.errors import PayloadTooLargeError, RippleError
from runtime.jobs import JobRunner
from runtime.metrics import Metrics
from runtime.settings import Settings

logger = logging.getLogger(__name__)

_UPLOADS = "/v1/documents"


@contextmanager
def _explained_failures(app: FastAPI) -> Iterator[None]:
    """Start-up errors whose message already says what to change (a store that cannot open, a collection
    embedded by another model, a missing model) are kept for `ripple serve` to print instead of a traceback."""
    try:
        yield
    except (RippleError, StoreError) as exc:
        app.state.start_up_error = str(exc)
        raise


def create_app(settings: Settings, *, components: Components | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with _explained_failures(app):
            parts = components or build_components(settings)
        metrics = Metrics()
        async with AsyncExitStack() as stack:
            with _explained_failures(app):
                await start_components(parts, stack)
            metrics.watch_engine(parts.generator.unfinished_requests)
            indexer = parts.indexer
            jobs = JobRunner(lambda paths, progress: _index(indexer, paths, progress))
            await jobs.start()
            stack.push_async_callback(jobs.close)
            app.state.settings, app.state.indexer, app.state.jobs = settings, indexer, jobs
            app.state.admission = Admission(settings.max_concurrent_requests, settings.max_waiting_requests, metrics)
            app.state.metrics = metrics
            app.state.service = ChatService(settings, parts.generator, parts.retriever, parts.guard, metrics)
            app.state.readiness = lambda: {
                "accepting": not app.state.admission.draining,
                "engine": parts.generator.healthy,
                "store": parts.store.ready,
                "rails": parts.guard.ready if parts.guard is not None else True,
            }
            yield

    app = FastAPI(title="Ripple", version="0.1.0", lifespan=lifespan)
    app.include_router(router)
    app.include_router(documents_router)
    install_error_handlers(app)

    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_kb * 1024, exempt=(_UPLOADS,))
    # Uploads have their own, larger bound, also enforced before the body is read (or spooled to disk):
    # the file's limit plus room for the multipart framing around it.
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_upload_mb * 1024 * 1024 + 64 * 1024,
        only=(_UPLOADS,),
        message=f"the upload is over {settings.max_upload_mb} MiB (RIPPLE_MAX_UPLOAD_MB): send a smaller file, "
        "or raise the limit",
    )
    app.add_middleware(RequestIdMiddleware)
    return app


async def _index(indexer: Indexer, paths: list[Path], progress: Callable[[int, int], None]) -> dict[str, Any]:
    return (await indexer.run(paths, progress=progress)).as_dict()


class BodyLimitMiddleware:
    """Refuse request bodies over `limit` bytes with 413, before the route reads or parses them: by their
    Content-Length when they declare one, else as soon as the bytes received pass the limit."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        *,
        exempt: tuple[str, ...] = (),
        only: tuple[str, ...] = (),
        message: str | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt
        self.only = only  # when set, the paths this bound applies to (else: every path not exempt)
        self.message = message or (
            f"the request body is over {limit // 1024} KiB (RIPPLE_MAX_REQUEST_KB): send less context, "
            "or raise the limit"
        )

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(self.message)

    def _applies(self, path: str) -> bool:
        return path.startswith(self.only) if self.only else not path.startswith(self.exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._applies(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            error = self._too_large()
            await JSONResponse(error.to_openai(), status_code=error.status_code)(scope, receive, send)
            return
        received, refused = 0, False

        async def counted() -> Message:
            # Past the limit: answer 413 here, and tell the route the client left, so it stops reading.
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                refused = True
                error = self._too_large()
                await JSONResponse(error.to_openai(), status_code=error.status_code)(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted, unless_refused)
        except Exception:
            if not refused:
                raise


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
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)["X-Request-Id"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if started:  # a stream already under way: its own error event was the client's answer
                raise
            # An unexpected failure: the OpenAI error shape and the request id that finds it in the log,
            # not Starlette's plain-text 500.
            logger.exception("unexpected failure answering %s %s", scope.get("method"), scope.get("path"))
            error = RippleError(f"internal error: the server's log has the details under request id {rid}")
            await JSONResponse(error.to_openai(), status_code=500, headers={"X-Request-Id": rid})(scope, receive, send)
        finally:
            logs.request_id.reset(token)

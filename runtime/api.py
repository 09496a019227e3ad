"""HTTP routes: a thin layer over `ChatService`, plus the error table and SSE streaming.

Errors before the first byte are JSON with their status from `runtime.errors`; after it they are
an SSE `error` event followed by `[DONE]`, never an exception escaping the stream. Every stream
closes the generation in `finally`, which aborts the engine request when the client left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from runtime import sse
from runtime.admission import Admission, SlotStreamingResponse, Ticket
from runtime.chat import ChatService, FinishEvent, TextEvent
from runtime.errors import BadRequestError, ClientClosedError, DeadlineError, ModelNotFoundError, RippleError
from runtime.generation import SamplingOptions
from runtime.schemas import ChatCompletionRequest, Citation, RetrieveRequest, chunk_payload

logger = logging.getLogger(__name__)
router = APIRouter()


def get_service(request: Request) -> ChatService:
    return request.app.state.service  # type: ignore[no-any-return]


Service = Annotated[ChatService, Depends(get_service)]


def citations(event: FinishEvent) -> list[dict[str, Any]]:
    return [
        Citation(
            index=i,
            source=p.source,
            chunk_id=p.chunk_id,
            doc_id=p.doc_id,
            heading=p.heading,
            score=round(p.score, 4),
            start=p.start,
            end=p.end,
            text=p.text,
        ).model_dump()
        for i, p in enumerate(event.citations, start=1)
    ]


def usage(event: FinishEvent) -> dict[str, int]:
    return {
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "total_tokens": event.prompt_tokens + event.completion_tokens,
    }


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request, service: Service) -> Response:
    arrived = time.perf_counter()
    if len(body.messages) > service.settings.max_messages:
        service.metrics.rejected.labels("messages").inc()
        raise BadRequestError(
            f"{len(body.messages)} messages, the limit is {service.settings.max_messages} (RIPPLE_MAX_MESSAGES): "
            "send fewer, older turns summarised or dropped",
            param="messages",
        )
    timeout = _timeout(request, service)
    options = service.check(body)
    admission: Admission = request.app.state.admission
    ticket = admission.acquire()
    try:
        # Until a stream starts (and for the whole of a non-streamed answer) a client that leaves cancels
        # the work: retrieval, rails and generation. Once streaming, the response itself notices.
        return await _until_disconnect(request, _answer(body, options, service, ticket, arrived, timeout))
    except ClientClosedError:
        service.metrics.requests.labels("cancelled").inc()
        service.metrics.cancelled.inc()
        ticket.release()
        raise
    except BaseException:
        service.metrics.requests.labels("error").inc()
        ticket.release()
        raise


SEND_GRACE_S = 10.0
"""How long past its deadline a stream may take to reach a slow client before it is closed."""
_SECONDS = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")  # "1e999" is capped like any long one


def _timeout(request: Request, service: ChatService) -> float:
    """The request's deadline in seconds: the server's, or less when the client asks (X-Request-Timeout)."""
    limit = service.settings.request_timeout_s
    asked = request.headers.get("x-request-timeout")
    if asked is None:
        return limit
    seconds = float(asked) if _SECONDS.fullmatch(asked.strip()) else -1.0  # no "1_0", "nan" or "inf"
    if not 0 < seconds:
        raise BadRequestError(
            f"X-Request-Timeout must be a number of seconds above 0, not {asked!r}", param="X-Request-Timeout"
        )
    return min(seconds, limit)


async def _until_disconnect(request: Request, work: Awaitable[Response]) -> Response:
    """Run `work`; if the client disconnects first, cancel it and raise `ClientClosedError`."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    logger.info("client left before the answer; its work was cancelled")
    raise ClientClosedError("the client closed the connection")


def _deadline_error(service: ChatService, timeout: float) -> DeadlineError:
    service.metrics.deadline_exceeded.inc()
    return DeadlineError(
        f"the request took longer than its {timeout:g} s deadline (RIPPLE_REQUEST_TIMEOUT_S or "
        "X-Request-Timeout); generation was stopped. Ask for fewer max_tokens or allow more time"
    )


async def _answer(
    body: ChatCompletionRequest,
    options: SamplingOptions,
    service: ChatService,
    ticket: Ticket,
    arrived: float,
    timeout: float,
) -> Response:
    request_id = uuid.uuid4().hex
    logger.info("chat completion %s (stream=%s)", request_id, body.stream)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout - (time.perf_counter() - arrived)
    try:
        async with asyncio.timeout_at(deadline):
            prepared = await service.prepare(body, options)
    except TimeoutError:
        raise _deadline_error(service, timeout) from None
    completion_id, created, model = f"chatcmpl-{request_id}", int(time.time()), service.generator.model_id
    events = service.events(prepared, request_id, stream=body.stream, on_first_token=ticket.started)
    if not body.stream:
        try:
            async with asyncio.timeout_at(deadline), aclosing(events) as stream:
                text, finish = [], None
                async for ev in stream:
                    if isinstance(ev, TextEvent):
                        ticket.started()  # a refusal's text comes with no engine token
                        text.append(ev.text)
                    else:
                        finish = ev
        except TimeoutError:
            raise _deadline_error(service, timeout) from None
        assert finish is not None
        service.metrics.request_seconds.observe(time.perf_counter() - arrived)
        service.metrics.requests.labels("ok").inc()
        ticket.release()
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(text)},
                        "logprobs": None,
                        "finish_reason": finish.finish_reason,
                    }
                ],
                "usage": usage(finish),
                "citations": citations(finish),
                "dropped_sources": finish.dropped_sources,
                "flagged_sources": finish.flagged_sources,
            }
        )
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    # The first event is awaited before the response starts, so a failure up to the first token (engine
    # not ready, sampling values the engine refuses, an upstream that refuses or is down, the deadline)
    # is an HTTP status the client can act on (and retry), not a 200 with an error event in it.
    try:
        async with asyncio.timeout_at(deadline):
            head: TextEvent | FinishEvent | None = await anext(events)
    except TimeoutError:
        raise _deadline_error(service, timeout) from None
    except BaseException:
        await events.aclose()
        raise
    if isinstance(head, TextEvent):
        ticket.started()

    streamed = False

    async def frames() -> AsyncIterator[bytes]:
        nonlocal head, streamed
        streamed = True
        first, status = True, "ok"
        try:
            async with aclosing(events) as stream:
                while True:
                    ev, head = head, None
                    if ev is None:
                        try:
                            # The deadline covers each wait for the engine, never the time spent sending.
                            async with asyncio.timeout_at(deadline):
                                ev = await anext(stream)
                        except StopAsyncIteration:
                            break
                        except TimeoutError:
                            raise _deadline_error(service, timeout) from None
                    if isinstance(ev, TextEvent) or first:
                        # The first chunk carries the role and the first text (empty for an empty
                        # answer): no early role-only chunk, and never a stream without the role.
                        text = ev.text if isinstance(ev, TextEvent) else ""
                        delta = {"role": "assistant", "content": text} if first else {"content": text}
                        if first and text:
                            service.metrics.ttft_seconds.observe(time.perf_counter() - arrived)
                        first = False
                        yield sse.event(
                            chunk_payload(
                                completion_id=completion_id,
                                created=created,
                                model=model,
                                delta=delta,
                                finish_reason=None,
                            )
                        )
                    if isinstance(ev, FinishEvent):
                        last = chunk_payload(
                            completion_id=completion_id,
                            created=created,
                            model=model,
                            delta={},
                            finish_reason=ev.finish_reason,
                        )
                        last["citations"] = citations(ev)
                        last["dropped_sources"] = ev.dropped_sources
                        last["flagged_sources"] = ev.flagged_sources
                        yield sse.event(last)
                        if include_usage:
                            yield sse.event(
                                {
                                    "id": completion_id,
                                    "object": "chat.completion.chunk",
                                    "created": created,
                                    "model": model,
                                    "choices": [],
                                    "usage": usage(ev),
                                }
                            )
        except RippleError as exc:
            status = "error"
            logger.warning("stream %s failed: %s", request_id, exc.message)
            yield sse.event(exc.to_openai())
        except Exception:
            status = "error"
            logger.exception("stream %s failed", request_id)
            yield sse.event(RippleError("internal error while generating").to_openai())
        except BaseException:  # the client left: the stream is being cancelled
            status = "cancelled"
            service.metrics.cancelled.inc()
            raise
        finally:
            service.metrics.requests.labels(status).inc()
            service.metrics.request_seconds.observe(time.perf_counter() - arrived)
        yield sse.DONE

    async def close() -> None:
        # However the response ends: the events (and the engine request behind them) are closed, and
        # a stream whose client left before its first frame, so that `frames` never ran, is counted.
        if not streamed:
            service.metrics.requests.labels("cancelled").inc()
            service.metrics.cancelled.inc()
        await events.aclose()

    return SlotStreamingResponse(
        frames(),
        ticket=ticket,
        on_close=close,
        ends_by=deadline + SEND_GRACE_S,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/v1/retrieve")
async def retrieve(body: RetrieveRequest, service: Service) -> dict[str, Any]:
    passages = await service.retrieve(body.query, body.top_k, mode=body.mode, filter=body.filter)
    finish = FinishEvent("stop", 0, 0, passages)
    return {"object": "list", "data": citations(finish)}


def _model(service: ChatService) -> dict[str, Any]:
    return {"id": service.generator.model_id, "object": "model", "created": 0, "owned_by": "ripple"}


@router.get("/v1/models")
async def models(service: Service) -> dict[str, Any]:
    return {"object": "list", "data": [_model(service)]}


@router.get("/v1/models/{model:path}")
async def model(model: str, service: Service) -> dict[str, Any]:
    if model != service.generator.model_id:
        raise ModelNotFoundError(
            f"model {model!r} is not served here; use {service.generator.model_id!r}", param="model"
        )
    return _model(service)


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    parts = request.app.state.readiness()
    ok = all(parts.values())
    return JSONResponse({"ready": ok, **parts}, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(service: Service) -> Response:
    return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RippleError)
    async def ripple_error(request: Request, exc: RippleError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        if exc.should_retry is not None:
            headers["x-should-retry"] = str(exc.should_retry).lower()
        if exc.status_code >= 500:
            logger.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.message)
        return JSONResponse(exc.to_openai(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes and methods, in the OpenAI error shape the clients parse (not FastAPI's `detail`).
        error = RippleError(f"{exc.detail}: {request.method} {request.url.path}")
        error.status_code, error.error_type = exc.status_code, "invalid_request_error"
        return JSONResponse(error.to_openai(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems: list[str] = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":  # its location is a character offset, not a field
                offset = err.get("loc", ("body", "?"))[-1]
                reason = (err.get("ctx") or {}).get("error", "")
                problems.append(f"the body is not valid JSON ({reason} at character {offset})")
                continue
            message = str(err.get("msg")).removeprefix("Value error, ")  # pydantic's prefix for our own checks
            problem = f"{_field(err.get('loc', ())) or 'body'}: {message}"
            if problem not in problems:
                problems.append(problem)
        first = exc.errors()[0] if exc.errors() else {}
        param = None if first.get("type") == "json_invalid" else _field(first.get("loc", ()))
        error = BadRequestError("invalid request: " + "; ".join(problems), param=param or None)
        return JSONResponse(error.to_openai(), status_code=400)


# pydantic names the branch of a union it tried inside an error's location ("content.str", "list[...]"):
# those are not fields the client sent.
_BRANCHES = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _field(loc: Sequence[Any]) -> str:
    """An error location as the client's field path: without FastAPI's `body` and pydantic's union branches."""
    parts = [str(p) for p in loc[1:] if not (isinstance(p, str) and (p in _BRANCHES or "[" in p))]
    return ".".join(parts) if loc and loc[0] == "body" else ".".join(str(p) for p in loc)

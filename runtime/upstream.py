"""`OpenAIUpstreamGenerator`: the Generator role on OpenAI-compatible servers (a `vllm serve` pool).

For deployments that scale vLLM separately from Ripple. Requests go round-robin over the servers in
the pool that are up. A server that fails (no connection, a timeout, a 5xx, or "busy": 429 or 503) is
set aside for `cooldown` seconds, or for its `Retry-After`, and the request is retried on the next
server, up to `RIPPLE_UPSTREAM_RETRIES` times, but only while nothing of the answer has been received,
so a retry never duplicates streamed text. A stream that stalls past `RIPPLE_UPSTREAM_TIMEOUT_S` or
breaks off after text came is reported (`UpstreamError`), not retried. When every server is busy the
client gets a 429 with `Retry-After`; when none is up, `ready` turns false (`/ready` 503) until a
server's time aside has passed, and the next request tries it again. Every `probe_interval` seconds
(`RIPPLE_UPSTREAM_PROBE_S`) each server is asked for its models, as at start: one that does not answer
is set aside before a request has to find out (paying the connect timeout), one that answers again is
back at once rather than after its time aside, and one restarted with another model is set aside until
it serves ours again. A busy server is left to its Retry-After. The official `openai` client does
the HTTP and SSE parsing (its own retries are off: Ripple's go to another server). Closing the iterator
closes the HTTP stream, which makes vLLM abort the request. Prompt token counts are unknown before the
upstream answers. Credentials in a URL (`user:password@`) go to that server as Basic auth, as httpx sends
them, but are never shown: messages, Ripple's logs and httpx's name a server by its URL without them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from runtime.errors import BadRequestError, NotReadyError, OverloadedError, UpstreamError
from runtime.generation import Delta, Message, SamplingOptions

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
"""The longest wait for a connection to an upstream server (openai's own default), whatever
RIPPLE_UPSTREAM_TIMEOUT_S allows a stalled answer: a server that does not accept connections is passed
over in seconds, not after the answer timeout."""


@dataclass
class _Server:
    url: str
    """Without the credentials of the URL it was given (`_without_credentials`): messages and logs show it."""
    client: Any
    down_until: float = 0.0
    reason: str = ""
    unlisted: bool = False
    """Set aside because it did not answer for its models (at start or by a probe): the probe may bring it back.
    A server set aside by a request (a 5xx, a stalled answer) keeps its time aside: it may list its models
    while its engine fails every answer."""

    def up(self, now: float) -> bool:
        return now >= self.down_until


class _Busy(Exception):
    """A 429 or 503: the server is up but will not take the request now (`retry_after`: its header)."""

    def __init__(self, retry_after: float | None) -> None:
        self.retry_after = retry_after


class OpenAIUpstreamGenerator:
    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        served_name: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        cooldown: float = 10.0,
        probe_interval: float = 5.0,
        http_client: Any = None,
    ) -> None:
        if not base_urls:
            raise ValueError("OpenAIUpstreamGenerator needs at least one base URL")
        self._base_urls = list(base_urls)
        self._served_name = served_name
        self._model = model
        self._api_key = api_key or "unused"
        self._timeout = timeout
        self._max_retries = max_retries
        self._cooldown = cooldown
        self._probe_interval = probe_interval
        self._prober: asyncio.Task[None] | None = None
        self._http_client = http_client
        self._servers: list[_Server] = []
        self._turn = 0
        self._started = False

    @property
    def model_id(self) -> str:
        return self._served_name

    @property
    def ready(self) -> bool:
        """Started, with a server that serves the model: a request is tried even when every server is set
        aside for now (on the one back soonest)."""
        return self._started and any(s.down_until != float("inf") for s in self._servers)

    @property
    def healthy(self) -> bool:
        """Some server is up (or its time aside has passed): what `/ready` reports, so a load balancer
        sends traffic elsewhere while the whole pool is set aside."""
        now = time.monotonic()
        return self._started and any(s.up(now) for s in self._servers)

    async def start(self) -> None:
        import openai

        timeout = openai.Timeout(self._timeout, connect=min(CONNECT_TIMEOUT_S, self._timeout))
        self._servers = []
        for given in self._base_urls:
            url, headers = _without_credentials(given)
            client = openai.AsyncOpenAI(
                base_url=url,
                api_key=self._api_key,
                timeout=timeout,
                max_retries=0,
                default_headers=headers,
                http_client=self._http_client,
            )
            self._servers.append(_Server(url, client))
        listed = await asyncio.gather(*(s.client.models.list() for s in self._servers), return_exceptions=True)
        for server, models in zip(self._servers, listed, strict=True):
            if isinstance(models, BaseException):
                self._set_aside(server, f"cannot list its models: {models}", unlisted=True)
            elif self._model is None and models.data:
                self._model = models.data[0].id
        if self._model is None:
            raise UpstreamError(
                f"no upstream server listed a model ({', '.join(s.url for s in self._servers)}): start them, or set "
                "RIPPLE_MODEL"
            )
        for server, models in zip(self._servers, listed, strict=True):
            if not isinstance(models, BaseException) and self._model not in {m.id for m in models.data}:
                self._set_aside(server, f"does not serve {self._model!r}", forever=True, unlisted=True)
        self._started = True
        up = [s.url for s in self._servers if s.up(time.monotonic())]
        logger.info("upstream generator ready: %s via %s", self._model, ", ".join(up) or "no server up yet")
        if self._probe_interval > 0:
            self._prober = asyncio.create_task(self._probe_forever(), name="upstream-probe")

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval)
            await asyncio.gather(*(self._probe(server) for server in self._servers))

    async def _probe(self, server: _Server) -> None:
        """Ask `server` for its models and set it aside, or bring it back, by what it says."""
        try:
            models = await server.client.with_options(timeout=min(CONNECT_TIMEOUT_S, self._timeout)).models.list()
        except Exception as exc:  # whatever keeps it from answering sets it aside; the probe goes on
            now = time.monotonic()
            if server.up(now):
                self._set_aside(server, f"does not answer a probe: {_message(exc)}", unlisted=True)
            elif server.unlisted and server.down_until != float("inf"):  # still down: kept aside, quietly
                server.down_until = max(server.down_until, now + self._cooldown)
            return
        if self._model not in {m.id for m in models.data}:
            if server.down_until != float("inf"):
                self._set_aside(server, f"does not serve {self._model!r} any more", forever=True, unlisted=True)
        elif server.unlisted and not server.up(time.monotonic()):
            server.down_until, server.reason, server.unlisted = 0.0, "", False
            logger.info("upstream %s answers again: back in the pool", server.url)

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None
        for server in self._servers:
            await server.client.close()
        self._servers = []
        self._started = False

    async def count_prompt_tokens(self, messages: Sequence[Message]) -> int | None:
        return None

    def unfinished_requests(self) -> int | None:
        return None

    def _set_aside(
        self, server: _Server, reason: str, seconds: float | None = None, forever: bool = False, unlisted: bool = False
    ) -> None:
        seconds = self._cooldown if seconds is None else seconds
        server.down_until = float("inf") if forever else time.monotonic() + seconds
        server.reason, server.unlisted = reason, unlisted
        how_long = "" if forever else f" for {seconds:g} s"
        logger.warning("upstream %s set aside%s: %s", server.url, how_long, reason)

    def _pick(self) -> _Server:
        """The next server that is up, in turn; when none is, the one back soonest (it may be up by now)."""
        now = time.monotonic()
        count = len(self._servers)
        for i in range(count):
            server = self._servers[(self._turn + i) % count]
            if server.up(now):
                self._turn = (self._turn + i + 1) % count
                return server
        return min(self._servers, key=lambda s: s.down_until)

    async def generate(
        self, request_id: str, messages: Sequence[Message], options: SamplingOptions
    ) -> AsyncGenerator[Delta, None]:
        if not self._started:
            raise NotReadyError("the upstream generator is not started")
        waits: list[float] = []  # the Retry-After of each busy answer
        failures: list[str] = []  # what went wrong otherwise (a busy answer without Retry-After too)
        busy_only = True
        for attempt in range(self._max_retries + 1):
            server = self._pick()
            if not server.up(time.monotonic()):
                # No server is up: try the one back soonest, unless it named a time to come back (that
                # wait is the client's, not a request's) or serves another model; a retry waits a little.
                if server.down_until == float("inf"):
                    raise UpstreamError(f"no upstream server serves {self._model!r}: {server.url} {server.reason}")
                if server.reason == "busy":
                    break
                if attempt:
                    await asyncio.sleep(min(1.0, 0.25 * 2 ** (attempt - 1)))
            started = False
            try:
                async for delta in self._stream(server, request_id, messages, options):
                    if not started:
                        started, server.down_until = True, 0.0  # it answers: up again
                    yield delta
                return
            except _Busy as exc:
                if exc.retry_after is not None:
                    waits.append(exc.retry_after)
                    self._set_aside(server, "busy", exc.retry_after)
                else:  # busy for a moment, it seems: set aside like a failure, and retried like one
                    failures.append(f"{server.url}: busy")
                    self._set_aside(server, "busy, no Retry-After")
            except UpstreamError as exc:
                if started:
                    raise
                busy_only = False
                failures.append(f"{server.url}: {exc}")
                self._set_aside(server, str(exc))
        if busy_only:
            # Busy everywhere it asked (or everywhere, when no server was up): a 429 the client may retry.
            pending = [s.down_until - time.monotonic() for s in self._servers if s.reason == "busy"]
            error = OverloadedError("the upstream servers are busy: retry later")
            error.retry_after = max(1, round(min(waits or pending, default=1.0)))
            raise error
        raise UpstreamError("the upstream servers failed: " + "; ".join(failures))

    async def _stream(
        self, server: _Server, request_id: str, messages: Sequence[Message], options: SamplingOptions
    ) -> AsyncGenerator[Delta, None]:
        """One attempt on one server. Before any text: `_Busy` for 429/503, `UpstreamError` for what another
        server might not fail (a connection, a timeout, a 5xx), `BadRequestError` for what none would take."""
        import openai

        extra_body = {
            k: v
            for k, v in {
                "top_k": options.top_k,
                "min_tokens": options.min_tokens,
                "repetition_penalty": options.repetition_penalty,
                "ignore_eos": options.ignore_eos or None,
            }.items()
            if v is not None
        }
        try:
            stream = await server.client.chat.completions.create(
                model=self._model,
                messages=list(messages),
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=options.max_tokens,
                temperature=options.temperature,
                top_p=options.top_p,
                stop=list(options.stop) or None,
                seed=options.seed,
                presence_penalty=options.presence_penalty,
                frequency_penalty=options.frequency_penalty,
                extra_body=extra_body or None,
                extra_headers={"X-Request-Id": request_id},
            )
        except openai.APIStatusError as exc:
            if exc.status_code in (429, 503):
                raise _Busy(_retry_after(exc.response)) from exc
            if 400 <= exc.status_code < 500:
                raise BadRequestError(f"the upstream model refused the request: {exc.message}") from exc
            raise UpstreamError(f"HTTP {exc.status_code}: {exc.message}") from exc
        except openai.OpenAIError as exc:  # no connection, a timeout
            raise UpstreamError(_message(exc)) from exc
        broken: tuple[type[BaseException], ...] = (openai.OpenAIError, *_http_errors())
        completion_tokens = 0
        finish: str | None = None
        usage: Any = None
        sent = False
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    # The last chunk carries usage with no choices; a server that reports usage on every
                    # chunk (vLLM with --enable-force-include-usage) still has its text read.
                    usage = chunk.usage
                for choice in chunk.choices[:1]:
                    text = choice.delta.content or ""
                    if choice.finish_reason is not None:
                        finish = choice.finish_reason
                    if text:
                        completion_tokens += 1
                        sent = True
                        yield Delta(text=text, completion_tokens=completion_tokens)
        except openai.APIError as exc:  # an error event inside the stream
            if not sent and 400 <= (_code(exc) or 0) < 500:
                raise BadRequestError(f"the upstream model refused the request: {exc.message}") from exc
            raise UpstreamError(f"the upstream stream broke off: {exc.message}") from exc
        except broken as exc:  # the HTTP library's own errors arrive unwrapped mid-stream
            raise UpstreamError(f"the upstream stream broke off: {_message(exc)}") from exc
        finally:
            await stream.close()
        if finish is None:
            # vLLM ends every answer with a finish reason; a stream that ends without one was cut short
            # (by a proxy, say), and passing it off as a complete answer would hide that.
            raise UpstreamError("the upstream stream ended without a finish reason: the answer was cut short")
        yield Delta(
            text="",
            finish_reason=finish,
            prompt_tokens=usage.prompt_tokens if usage is not None else None,
            completion_tokens=usage.completion_tokens if usage is not None else completion_tokens,
        )


@functools.cache
def _http_errors() -> tuple[type[BaseException], ...]:
    """The base errors of the HTTP libraries the openai client may use (httpx; httpx2 from openai 3)."""
    import httpx

    errors: list[type[BaseException]] = [httpx.HTTPError]
    try:
        import httpx2  # type: ignore[import-not-found,unused-ignore]

        errors.append(httpx2.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


def _without_credentials(url: str) -> tuple[str, dict[str, str] | None]:
    """`url` without the `user:password@` of its authority, and the Basic auth header httpx would have sent
    for them. Credentials are a secret: httpx logs every request's URL, and Ripple's messages and logs name
    servers by theirs; scheme, host, port and path still tell the servers apart."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    stripped = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if not parts.username and not parts.password:
        return stripped, None
    token = base64.b64encode(f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()).decode()
    return stripped, {"Authorization": f"Basic {token}"}


def _retry_after(response: Any) -> float | None:
    """The seconds a Retry-After header asks for, if the response has one in seconds."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, TypeError, ValueError):
        return None


def _code(exc: Any) -> int | None:
    code = getattr(exc, "code", None)
    if code is None and isinstance(getattr(exc, "body", None), dict):
        code = exc.body.get("code")
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc) or type(exc).__name__

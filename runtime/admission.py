"""Admission control, in one place: every chat request passes `Admission.acquire` before any work.

Refused there, with nothing retrieved, checked or generated:
- while the server drains after SIGTERM: 503 with Retry-After (clients go to another replica);
- past `RIPPLE_MAX_CONCURRENT_REQUESTS` requests in flight: 429 with Retry-After;
- past `RIPPLE_MAX_WAITING_REQUESTS` admitted requests that have no token yet: 429 with Retry-After.

The first bound caps memory: an admitted request holds its `Ticket` until its response is sent or
the client left, streams included. The second is the queue in front of the engine (retrieval, rails,
the engine's own waiting queue and prefill): it is counted from admission, so a burst cannot slip
past it before the engine has seen it, and it keeps admitted requests' time to first token bounded
when the engine falls behind. Nothing else queues.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from runtime.errors import NotReadyError, OverloadedError
from runtime.metrics import Metrics

logger = logging.getLogger(__name__)


class Ticket:
    """One admitted request. `started()` when its first token is out; `release()` when it is over (idempotent)."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._waiting = True
        self._held = True

    def started(self) -> None:
        if self._waiting:
            self._waiting = False
            self._admission._change(waiting=-1)

    def release(self) -> None:
        if self._held:
            self.started()
            self._held = False
            self._admission._change(in_flight=-1)


class Admission:
    def __init__(self, limit: int, waiting_limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self.waiting_limit = waiting_limit
        self.in_flight = 0
        self.waiting = 0
        self.draining = False
        self._metrics = metrics

    def acquire(self) -> Ticket:
        if self.draining:
            self._metrics.rejected.labels("draining").inc()
            raise NotReadyError("this server is shutting down and takes no new requests: retry on another replica")
        if self.in_flight >= self.limit:
            self._metrics.rejected.labels("in_flight").inc()
            raise OverloadedError(
                f"{self.in_flight} requests are in flight, the limit is {self.limit} "
                "(RIPPLE_MAX_CONCURRENT_REQUESTS): retry after the Retry-After delay"
            )
        if self.waiting >= self.waiting_limit:
            self._metrics.rejected.labels("waiting").inc()
            raise OverloadedError(
                f"{self.waiting} requests are waiting for their first token, the limit is {self.waiting_limit} "
                "(RIPPLE_MAX_WAITING_REQUESTS): retry after the Retry-After delay"
            )
        self._change(in_flight=1, waiting=1)
        return Ticket(self)

    def _change(self, *, in_flight: int = 0, waiting: int = 0) -> None:
        self.in_flight += in_flight
        self.waiting += waiting
        self._metrics.in_flight.set(self.in_flight)
        self._metrics.waiting.set(self.waiting)


class SlotStreamingResponse(StreamingResponse):
    """A stream that runs `on_close` and gives its admission ticket back however it ends, even if it
    never started (a client that left before the first frame: the body's own `finally` never runs)."""

    def __init__(
        self,
        *args: object,
        ticket: Ticket,
        on_close: Callable[[], Awaitable[None]],
        ends_by: float | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._ticket = ticket
        self._on_close = on_close
        self._ends_by = ends_by

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            # `ends_by` (event-loop time) bounds the whole response, sending included: a client that keeps
            # the connection open but stops reading would otherwise hold its slot for as long as it likes.
            async with asyncio.timeout_at(self._ends_by):
                await super().__call__(scope, receive, send)
        except TimeoutError:
            logger.warning("a stream outlived its deadline (its client stopped reading): closed")
        finally:
            try:
                # A body cancelled while it waited in `send` (a client that stopped reading, then left)
                # is left suspended by Starlette: close it now, so its outcome is counted now, not
                # whenever the garbage collector gets to it.
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
                await self._on_close()
            finally:
                self._ticket.release()

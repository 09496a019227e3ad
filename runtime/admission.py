"""Admission control, in one place: a bound on chat requests in flight, refused early with 429.

A refused request costs no retrieval, rails or engine work. The slot is held until the response
is fully sent (or the client left), including for streams. Bounds on the engine's own waiting
queue and per-tenant fairness are left to the load-handling work.
"""

from __future__ import annotations

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from runtime.errors import OverloadedError
from runtime.metrics import Metrics


class Admission:
    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self.in_flight = 0
        self._metrics = metrics

    def acquire(self) -> None:
        if self.in_flight >= self.limit:
            self._metrics.rejected.labels("in_flight").inc()
            raise OverloadedError(
                f"{self.in_flight} requests are in flight, the limit is {self.limit} "
                "(RIPPLE_MAX_CONCURRENT_REQUESTS): retry after the Retry-After delay"
            )
        self.in_flight += 1
        self._metrics.in_flight.set(self.in_flight)

    def release(self) -> None:
        self.in_flight -= 1
        self._metrics.in_flight.set(self.in_flight)


class SlotStreamingResponse(StreamingResponse):
    """A stream that gives its admission slot back however it ends, even if it never started."""

    def __init__(self, *args: object, admission: Admission, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._admission.release()

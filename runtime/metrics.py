"""Ripple's Prometheus metrics, one registry per app (so tests can build many apps).

`/metrics` serves this registry followed by the process-wide default registry, where vLLM's
in-process engine publishes its own `vllm:*` metrics.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ripple_requests", "Chat requests by outcome", ["status"], registry=r)
        self.finish = Counter("ripple_finish", "Answers by finish reason", ["reason"], registry=r)
        self.rejected = Counter(
            "ripple_rejected", "Requests refused before any work, by reason", ["reason"], registry=r
        )
        self.cancelled = Counter("ripple_cancelled", "Streams the client left before the end", registry=r)
        self.flagged_sources = Counter(
            "ripple_flagged_sources", "Retrieved chunks the retrieval rail left out (planted instructions)", registry=r
        )
        self.deadline_exceeded = Counter(
            "ripple_deadline_exceeded", "Chat requests stopped at RIPPLE_REQUEST_TIMEOUT_S", registry=r
        )
        self.retrieval_seconds = Histogram(
            "ripple_retrieval_seconds", "Query embedding + vector search", buckets=_FAST, registry=r
        )
        self.rails_seconds = Histogram(
            "ripple_rails_seconds", "Time in NeMo rails per check", ["rail"], buckets=_FAST, registry=r
        )
        self.first_window_seconds = Histogram(
            "ripple_first_window_seconds",
            "Streams with output rails: the engine's first text to the first text sent (the first window's hold)",
            buckets=_FAST,
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "ripple_ttft_seconds", "Request arrival to first content byte sent", buckets=_SLOW, registry=r
        )
        self.request_seconds = Histogram(
            "ripple_request_seconds", "Request arrival to last byte", buckets=_SLOW, registry=r
        )
        self.in_flight = Gauge("ripple_requests_in_flight", "Chat requests admitted and not finished", registry=r)
        self.engine_unfinished = Gauge(
            "ripple_engine_unfinished_requests", "Requests the engine holds (running + waiting)", registry=r
        )

        self.waiting = Gauge(
            "ripple_requests_waiting",
            "Admitted chat requests with no token yet (retrieval, rails, engine queue, prefill)",
            registry=r,
        )
        self.draining = Gauge("ripple_draining", "1 after SIGTERM while open requests finish", registry=r)

    def watch_engine(self, unfinished: Callable[[], int | None]) -> None:
        self.engine_unfinished.set_function(lambda: float(unfinished() or 0))

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(DEFAULT_REGISTRY)

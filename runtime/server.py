"""`serve(app, settings)`: uvicorn with a drain phase in front of its own graceful shutdown.

On the first SIGTERM (or Ctrl-C) the server keeps its listener open but drains: `/ready` and new chat
requests answer 503 with Retry-After, so a load balancer moves traffic elsewhere, while requests in
flight, streams included, run to completion for up to `RIPPLE_DRAIN_TIMEOUT_S`. Then uvicorn's
shutdown closes the listener and the connections and the lifespan stops the engine; the process exits
0. A second signal during the drain skips what is left of it.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from runtime.settings import Settings

logger = logging.getLogger(__name__)

# What uvicorn itself may still wait for after the drain: connections to close.
SHUTDOWN_GRACE_S = 5


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_timeout_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_timeout_s = drain_timeout_s
        self._drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        admission = getattr(self._app.state, "admission", None)
        if self._drain_started is None and admission is not None and self._drain_timeout_s > 0:
            self._drain_started = time.monotonic()
            admission.draining = True
            self._app.state.metrics.draining.set(1)
            logger.info(
                "%s: draining %d request(s) for up to %g s; new requests get 503",
                signal.Signals(sig).name,
                admission.in_flight,
                self._drain_timeout_s,
            )
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_started is not None and not self.should_exit:
            in_flight = self._app.state.admission.in_flight
            waited = time.monotonic() - self._drain_started
            if in_flight == 0 or waited >= self._drain_timeout_s:
                if in_flight:
                    logger.warning("drain window over after %.1f s with %d request(s) still open", waited, in_flight)
                else:
                    logger.info("drained in %.1f s", waited)
                self.should_exit = True
        return await super().on_tick(counter)


def serve(app: FastAPI, settings: Settings) -> None:
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=SHUTDOWN_GRACE_S
    )
    # uvicorn re-raises the signals it caught once it has shut down; with a handler that does nothing
    # in place, a completed shutdown exits 0, as process supervisors expect.
    signal.signal(signal.SIGTERM, lambda *_: None)
    DrainingServer(config, app, settings.drain_timeout_s).run()

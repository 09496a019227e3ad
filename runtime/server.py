"""`serve(app, settings)`: uvicorn with a drain phase in front of its own graceful shutdown.

On the first SIGTERM (or Ctrl-C) the server keeps its listener open but drains: `/ready` and new chat
requests answer 503 with Retry-After, so a load balancer moves traffic elsewhere, while requests in
flight, streams included, run to completion for up to `RIPPLE_DRAIN_TIMEOUT_S`. Then uvicorn's
shutdown closes the listener and the connections and the lifespan stops the engine; the process exits
0. A second signal during the drain skips what is left of it.

A signal that comes before the server is up (models loading, the engine starting) has nothing to
drain, and the engine's start cannot be interrupted where it runs (it blocks the event loop for tens
of seconds). So the process stops its child processes (vLLM's engine core) and exits 0 at once,
rather than finishing a start-up only to shut it down. Nothing is written during start-up, so
nothing stored is at stake.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from types import FrameType
from typing import NoReturn

import psutil
import uvicorn
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from runtime.settings import Settings

logger = logging.getLogger(__name__)

# What uvicorn itself may still wait for after the drain: connections to close.
SHUTDOWN_GRACE_S = 5
# How long child processes get to stop on SIGTERM, when the server is stopped during start-up.
CHILD_GRACE_S = 5


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_timeout_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_timeout_s = drain_timeout_s
        self._drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.started:
            exit_during_start_up(sig)
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


def exit_during_start_up(sig: int) -> NoReturn:
    """Stop every descendant process (vLLM's engine core and its worker): SIGTERM, then SIGKILL for
    what is left after `CHILD_GRACE_S`; then exit 0 without unwinding the start-up in progress."""
    descendants = _stopped_descendants()
    logger.info(
        "%s during start-up: nothing to drain; stopping %d child process(es) and exiting",
        signal.Signals(sig).name,
        len(descendants),
    )
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
            child.resume()
    _, alive = psutil.wait_procs(descendants, timeout=CHILD_GRACE_S)
    for child in alive:
        logger.warning("child process %d did not stop in %g s; killing it", child.pid, CHILD_GRACE_S)
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout=1)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _stopped_descendants() -> list[psutil.Process]:
    """Every descendant but multiprocessing's resource tracker, each suspended (SIGSTOP), found by scanning
    until a scan finds no new one. An engine core that is spawning its worker cannot finish that after
    the scan missed the worker: the worker would outlive it, re-parented out of reach, and keep the
    tracker alive. The resource tracker ignores SIGTERM and leaves by itself once every process holding
    its pipe has exited, after freeing what they leaked: killing it would skip that."""
    found: dict[int, psutil.Process] = {}
    while True:
        new = [
            p for p in psutil.Process().children(recursive=True) if p.pid not in found and not _is_resource_tracker(p)
        ]
        if not new:
            return list(found.values())
        for process in new:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.suspend()
            found[process.pid] = process


def _is_resource_tracker(process: psutil.Process) -> bool:
    try:
        return "multiprocessing.resource_tracker" in " ".join(process.cmdline())
    except psutil.Error:
        return False


class StartUpError(Exception):
    """The lifespan failed with an error whose message says what to change (a store that cannot open, a
    collection embedded by another model, a missing model): `ripple serve` prints it as one line."""


def serve(app: FastAPI, settings: Settings) -> None:
    config = uvicorn.Config(
        _QuietStartUpFailure(app),
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    # uvicorn re-raises the signals it caught once it has shut down; with a handler that does nothing
    # in place, a completed shutdown exits 0, as process supervisors expect.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        DrainingServer(config, app, settings.drain_timeout_s).run()
    except SystemExit:
        if (error := getattr(app.state, "start_up_error", None)) is not None:
            raise StartUpError(error) from None
        raise


class _QuietStartUpFailure:
    """Starlette reports a failed lifespan start-up to uvicorn as the formatted traceback, which uvicorn
    logs. For the errors the lifespan marks as explained (`app.state.start_up_error`) the report goes
    without it: forty lines would bury the one that says what to change. Other failures keep theirs."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self._app(scope, receive, send)
            return

        async def report(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and hasattr(self._app.state, "start_up_error"):
                message = {**message, "message": ""}
            await send(message)

        await self._app(scope, receive, report)

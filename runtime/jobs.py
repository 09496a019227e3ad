"""Background ingestion jobs: uploads are indexed one job at a time, in arrival order.

One worker, because embedding is CPU-bound and a second would only slow both; the queue is
bounded, so a flood of uploads gets 429 instead of growing memory. Finished jobs are kept (the
newest `keep` of them) so clients can poll their outcome. Jobs do not survive a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from runtime.errors import OverloadedError

logger = logging.getLogger(__name__)

Status = Literal["queued", "running", "done", "failed"]
IndexFn = Callable[[list[Path], Callable[[int, int], None]], Awaitable[dict[str, Any]]]


@dataclass
class Job:
    id: str
    paths: list[str]
    status: Status = "queued"
    files_done: int = 0
    chunks_embedded: int = 0
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    # Run when the job has ended, whatever its outcome (an upload keeps or restores its files by it).
    on_end: Callable[[Job], None] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["on_end"]
        return out


class JobRunner:
    def __init__(self, index: IndexFn, *, queue_size: int = 64, keep: int = 200) -> None:
        self._index = index
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._keep = keep
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="ripple-ingest")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    def check_room(self) -> None:
        """Raise 429 when no job can be queued (before a caller does work for one)."""
        if self._queue.full():
            raise OverloadedError(f"{self._queue.qsize()} ingestion jobs are waiting: retry later")

    def submit(self, paths: list[Path], on_end: Callable[[Job], None] | None = None) -> Job:
        job = Job(id=uuid.uuid4().hex, paths=[str(p) for p in paths], on_end=on_end)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise OverloadedError(f"{self._queue.qsize()} ingestion jobs are waiting: retry later") from None
        self._jobs[job.id] = job
        while len(self._jobs) > self._keep:
            self._jobs.popitem(last=False)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def active(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.status in ("queued", "running")]

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            job.status = "running"

            def progress(files: int, chunks: int, job: Job = job) -> None:
                job.files_done, job.chunks_embedded = files, chunks

            try:
                job.summary = await self._index([Path(p) for p in job.paths], progress)
                job.status = "done"
            except asyncio.CancelledError:
                job.status, job.error = "failed", "the server stopped"
                raise
            except Exception as exc:  # a job's failure is reported on the job, never kills the worker
                logger.exception("ingestion job %s failed", job.id)
                job.status, job.error = "failed", str(exc)
            finally:
                job.finished_at = time.time()
                if job.on_end is not None:
                    try:
                        job.on_end(job)
                    except Exception:
                        logger.exception("ingestion job %s: tidying its files failed", job.id)

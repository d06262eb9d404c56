"""Long operations as jobs: started by a 202, followed at `GET /api/v1/jobs/{job_id}`.

A verify of a large audience takes long at its small rate, longer than an HTTP client waits.
Jobs live in the API process's memory (the last MAX_JOBS): a restart forgets them, which is fine
for a check a person can start again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from events.activations import CommandRejected
from hubsync.api.schemas import ApiError, Job

__all__ = ["Jobs"]

log = logging.getLogger("hubsync.api")
MAX_JOBS = 200

Work = Callable[[Callable[[int, int], None]], Awaitable[dict[str, Any]]]


class Jobs:
    """The running and recent jobs; each runs as a task on the server's event loop."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._clock = clock

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def start(self, kind: str, activation_id: str, work: Work) -> Job:
        job = Job(
            id=f"job_{secrets.token_hex(8)}",
            kind=kind,
            activation_id=activation_id,
            state="running",
            created_at=self._clock(),
        )
        self._jobs[job.id] = job
        while len(self._jobs) > MAX_JOBS:
            self._jobs.popitem(last=False)

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total
            job.progress = round(done / total, 4) if total else 1.0

        async def run() -> None:
            try:
                job.result = await work(progress)
                job.state = "done"
            except CommandRejected as exc:
                job.state, job.error = "failed", ApiError(error="rejected", message=str(exc))
            except Exception as exc:  # a job reports its failure; it never takes the server down
                log.warning("job %s (%s) failed: %s", job.id, kind, type(exc).__name__)
                job.state = "failed"
                job.error = ApiError(error="failed", message=str(exc)[:500])
            finally:
                job.finished_at = self._clock()

        task = asyncio.get_running_loop().create_task(run(), name=job.id)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

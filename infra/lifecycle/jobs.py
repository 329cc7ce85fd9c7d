"""Long stack operations as background jobs, one at a time per stack (a second gets 409, never a race)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


class StackBusy(Exception):
    def __init__(self, stack: str, job: Job) -> None:
        super().__init__(f"stack {stack} is busy with {job.operation} (job {job.id})")
        self.job = job


@dataclass
class Job:
    id: str
    stack: str
    operation: str
    status: str = "queued"  # queued | running | succeeded | failed
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    error: str | None = None
    log: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "stack": self.stack, "operation": self.operation, "status": self.status,
                "started_at": self.started_at, "finished_at": self.finished_at, "error": self.error,
                "log_tail": list(self.log)[-20:]}  # fmt: skip


class JobRunner:
    """Runs one operation per stack at a time; every job is kept (bounded) for GET."""

    def __init__(self, max_jobs: int = 1000) -> None:
        self.running: dict[str, Job] = {}
        self.jobs: dict[str, Job] = {}
        self.max_jobs = max_jobs
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, stack: str, operation: str, work: Callable[[Job], Awaitable[None]]) -> Job:
        current = self.running.get(stack)
        if current is not None:
            raise StackBusy(stack, current)
        job = Job(id=f"job_{secrets.token_hex(6)}", stack=stack, operation=operation)
        self.running[stack] = job
        self.jobs[job.id] = job
        while len(self.jobs) > self.max_jobs:
            self.jobs.pop(next(iter(self.jobs)))

        async def run() -> None:
            job.status = "running"
            try:
                await work(job)
                job.status = "succeeded"
            except Exception as exc:  # recorded on the job; the deployment's status says the rest
                job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"[:1000]
            finally:
                job.finished_at = time.time()
                self.running.pop(stack, None)

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return job

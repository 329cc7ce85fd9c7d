"""Long stack operations as background jobs, one at a time per stack across every process.

A job holds the store lease ``stack:<name>`` while it runs (renewed every second; it moves on only if the
holder dies and stops renewing), so two control-plane processes can never run two operations on one stack: the
second gets `StackBusy` (409). Jobs are kept in the store, so any process can show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agentcloud.control.errors import StackBusy
from agentcloud.store import JobRow, Store
from agentcloud.store.offload import StoreThread

log = logging.getLogger("agentcloud.control")
HEARTBEAT_S = 1.0
LEASE_S = 30.0


@dataclass
class Job:
    """A running operation in this process; its log fills from the stack operation's output."""

    id: str
    stack: str
    operation: str
    status: str = "queued"  # queued | running | succeeded | failed | cancelled
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    error: str | None = None
    log: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    def row(self) -> JobRow:
        return JobRow(
            self.id,
            self.stack,
            self.operation,
            self.status,
            self.started_at,
            self.finished_at,
            self.error,
            tuple(self.log),
        )

    def as_dict(self) -> dict[str, Any]:
        return self.row().as_dict()


def lease_name(stack: str) -> str:
    return f"stack:{stack}"


class JobRunner:
    """Starts jobs under the stack's lease; `running` answers for every process."""

    def __init__(self, store: Store, db: StoreThread, lease_s: float = LEASE_S) -> None:
        self.store, self.db, self.lease_s = store, db, lease_s
        self.local: dict[str, Job] = {}  # stack -> the job this process runs on it
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self, stack: str, operation: str, work: Callable[[Job], Awaitable[None]]) -> Job:
        job = Job(id=f"job_{secrets.token_hex(6)}", stack=stack, operation=operation)
        if not await self.db(self.store.acquire_lease, lease_name(stack), job.id, self.lease_s):
            raise StackBusy(stack, await self.running(stack))
        self.local[stack] = job
        await self.db(self.store.save_job, job.row())

        async def run() -> None:
            beat = asyncio.get_running_loop().create_task(self._heartbeat(job))
            job.status = "running"
            try:
                await work(job)
                job.status = "cancelled" if job.status == "cancelled" else "succeeded"
            except Exception as exc:  # recorded on the job; the deployment's status says the rest
                job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"[:1000]
            finally:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
                job.finished_at = time.time()
                self.local.pop(stack, None)
                await self.db(self.store.save_job, job.row())
                await self.db(self.store.release_lease, lease_name(stack), job.id)

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return job

    async def _heartbeat(self, job: Job) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.db(self.store.acquire_lease, lease_name(job.stack), job.id, self.lease_s)
                await self.db(self.store.save_job, job.row())
            except Exception:
                log.exception("job %s heartbeat failed", job.id)

    async def running(self, stack: str) -> JobRow | None:
        """The job holding the stack, wherever it runs (this process's own view first: its log is live)."""
        local = self.local.get(stack)
        if local is not None:
            return local.row()
        holder = await self.db(self.store.lease_holder, lease_name(stack))
        return await self.db(self.store.job, holder) if holder else None

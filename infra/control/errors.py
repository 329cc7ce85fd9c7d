"""The control plane's exception tree."""

from __future__ import annotations

from infra.errors import InfraError
from infra.store import JobRow


class ControlError(InfraError):
    """Base of the control plane's errors."""


class StackBusy(ControlError):
    """Another operation holds the stack (in this process or another): answered 409."""

    def __init__(self, stack: str, job: JobRow | None) -> None:
        what = f"{job.operation} (job {job.id})" if job else "another operation"
        super().__init__(f"stack {stack} is busy with {what}")
        self.job = job


class UnsafeURL(ControlError, ValueError):
    """A webhook URL the gateway refuses to call (scheme, address range, credentials)."""

"""The control plane's exception tree."""

from __future__ import annotations

from agentcloud.errors import InfraError
from agentcloud.store import JobRow


class ControlError(InfraError):
    """Base of the control plane's errors."""


class StackBusy(ControlError):
    """Another operation holds the stack (in this process or another): answered 409."""

    def __init__(self, stack: str, job: JobRow | None) -> None:
        what = f"{job.operation} (job {job.id})" if job else "another operation"
        super().__init__(f"stack {stack} is busy with {what}")
        self.job = job


class NotManaged(ControlError):
    """A deployment registered by hand (`agentcloud gateway routes add`): no stack the control plane may
    scale, refresh or destroy (answered 409)."""

    def __init__(self, dep_id: str) -> None:
        super().__init__(
            f"deployment {dep_id} was registered as a route, not created through this API: it has no "
            "stack to scale, refresh or tear down here; change it where it was made"
        )


class GitOwned(ControlError):
    """A change that belongs in git: the stack file of a deployment applied from git (answered 409)."""

    def __init__(self, stack: str, what: str) -> None:
        super().__init__(
            f"stack {stack} comes from git: {what} in stacks/Pulumi.{stack}.yaml and let the GitOps workflow "
            "apply it (the control plane owns only its live replica count)"
        )


class UnsafeURL(ControlError, ValueError):
    """A webhook URL the gateway refuses to call (scheme, address range, credentials)."""

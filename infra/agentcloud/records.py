"""Deployments as typed records, shared by both planes through the store (pure; no I/O).

The state machine: provisioning -> active -> scaling -> teardown -> inactive, plus degraded. Every transition
is checked against the table below and recorded with its time and reason; an illegal one raises. `active` is
entered only when the engine's health check answered over the gateway's network path (the caller passes that
evidence); `degraded` covers failed health and drift found by a refresh.

A `DeploymentRecord` is what the store keeps for one deployment: who owns it, the deployment spec (as the
stack file declares it), its lifecycle, and the routes the data plane serves it by. `encode`/`decode` are its
one codec to and from the store's JSON columns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from agentcloud.errors import InfraError


class Status(StrEnum):
    """A deployment's state, with the reference API's names."""

    PROVISIONING = "provisioning"
    ACTIVE = "active"
    SCALING = "scaling"
    DEGRADED = "degraded"
    TEARDOWN = "teardown"
    INACTIVE = "inactive"

    @property
    def serving(self) -> bool:
        """Running replicas keep serving in these states."""
        return self in (Status.ACTIVE, Status.SCALING, Status.DEGRADED)


S = Status
ALLOWED: dict[Status, frozenset[Status]] = {
    S.PROVISIONING: frozenset({S.ACTIVE, S.DEGRADED, S.TEARDOWN}),
    S.ACTIVE: frozenset({S.SCALING, S.DEGRADED, S.TEARDOWN}),
    S.SCALING: frozenset({S.ACTIVE, S.DEGRADED, S.TEARDOWN, S.INACTIVE}),  # inactive: scaled to zero
    S.DEGRADED: frozenset({S.ACTIVE, S.SCALING, S.TEARDOWN}),
    S.TEARDOWN: frozenset({S.INACTIVE, S.DEGRADED}),
    # wake from zero, create again, or DELETE at zero (the model-cache volume, the stack itself)
    S.INACTIVE: frozenset({S.PROVISIONING, S.SCALING, S.TEARDOWN}),
}


class Reason(StrEnum):
    """Transition reasons that code (not only people) reads back."""

    SCALED_TO_ZERO = "scaled to zero"


class IllegalTransition(InfraError):
    """A lifecycle change the state machine does not allow."""


@dataclass(frozen=True)
class Transition:
    """One recorded change of status, with its time and reason."""

    at: float
    source: Status | None
    target: Status
    reason: str


@dataclass(frozen=True)
class Lifecycle:
    """A deployment's status, since when, and its bounded history of transitions."""

    status: Status
    since: float
    history: tuple[Transition, ...] = field(default=())

    @staticmethod
    def new(now: float, reason: str = "created") -> Lifecycle:
        return Lifecycle(S.PROVISIONING, now, (Transition(now, None, S.PROVISIONING, reason),))

    def to(self, target: Status, now: float, reason: str, healthy: bool = False) -> Lifecycle:
        if target == self.status:
            return self
        if target not in ALLOWED[self.status]:
            raise IllegalTransition(f"a deployment cannot go from {self.status.value} to {target.value}")
        if target is S.ACTIVE and not healthy:
            raise IllegalTransition(
                "active needs the engine's health check to have answered through the gateway"
            )
        history = (*self.history, Transition(now, self.status, target, reason))[-100:]  # bounded
        return replace(self, status=target, since=now, history=history)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "since": self.since,
            "history": [
                {
                    "at": t.at,
                    "from": t.source.value if t.source else None,
                    "to": t.target.value,
                    "reason": t.reason,
                }
                for t in self.history
            ],
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Lifecycle:
        """The inverse of `as_dict`."""
        history = tuple(
            Transition(
                float(t["at"]), Status(t["from"]) if t["from"] else None, Status(t["to"]), str(t["reason"])
            )
            for t in data["history"]
        )
        return Lifecycle(Status(data["status"]), float(data["since"]), history)

    @property
    def reason(self) -> str:
        """Why the deployment is in its current status."""
        return self.history[-1].reason if self.history else ""


MAX_RATE_CHANGES = 1000


@dataclass(frozen=True)
class Meter:
    """What a deployment's capacity has cost: a piecewise-constant rate ($/h of the replicas running, zero at
    zero) as a bounded list of (since, rate) changes; older changes are folded into ``folded_usd`` (spent
    before ``changes[0]``)."""

    changes: tuple[tuple[float, float], ...] = ()
    folded_usd: float = 0.0

    @property
    def rate(self) -> float:
        return self.changes[-1][1] if self.changes else 0.0

    def at(self, now: float, rate: float) -> Meter:
        """The meter after the rate became ``rate`` at ``now`` (unchanged if it already was)."""
        if self.changes and abs(self.changes[-1][1] - rate) < 1e-9:
            return self
        changes, folded = (*self.changes, (now, rate)), self.folded_usd
        while len(changes) > MAX_RATE_CHANGES:
            (t0, r0), (t1, _) = changes[0], changes[1]
            folded += r0 * (t1 - t0) / 3600
            changes = changes[1:]
        return Meter(changes, folded)

    def cost(self, start: float, end: float) -> float:
        """US dollars spent between ``start`` and ``end`` (the folded history counts when ``start`` precedes
        it)."""
        total = self.folded_usd if self.changes and start <= self.changes[0][0] else 0.0
        for i, (t, rate) in enumerate(self.changes):
            t_next = self.changes[i + 1][0] if i + 1 < len(self.changes) else end
            lo, hi = max(t, start), min(t_next, end)
            if hi > lo:
                total += rate * (hi - lo) / 3600
        return total

    def as_dict(self) -> dict[str, Any]:
        return {"changes": [list(c) for c in self.changes], "folded_usd": self.folded_usd}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Meter:
        changes = tuple((float(t), float(r)) for t, r in data.get("changes", ()))
        return Meter(changes, float(data.get("folded_usd", 0.0)))


@dataclass(frozen=True)
class DeploymentRecord:
    """One deployment as the store keeps it; the one owner of each field is written beside it.

    - ``org_id``: the org that created it (the management API, or `agentcloud gateway routes add`).
    - ``spec``: the deployment object of its stack file (git or the API owns it; the control plane writes it).
    - ``lifecycle``: the control plane (jobs, autoscaler); None for routes registered by hand.
    - ``routes``: what the data plane serves it by (endpoints, hosts, concurrency limit), from the stack's
      outputs.
    - ``meter``: what its capacity has cost (the control plane, each time the replicas running change).
    - ``git``: a stack applied from git and registered with the control plane (`agentcloud up --register`):
      git owns its file and bounds, the autoscaler its live count (each up is given it; the file is never
      edited)."""

    id: str
    org_id: str
    name: str
    model_id: str
    status: Status = Status.ACTIVE
    spec: dict[str, Any] = field(default_factory=dict)
    stack: str | None = None
    lifecycle: Lifecycle | None = None
    routes: dict[str, Any] = field(default_factory=dict)
    meter: Meter = field(default_factory=Meter)
    git: bool = False  # its stack file is git's: the control plane keeps a copy, never edits it

    @property
    def running(self) -> int:
        """Replicas running (serving or not yet healthy): the droplets being billed."""
        if self.status in (Status.INACTIVE,):
            return 0
        return len(self.routes.get("endpoints") or [])

    @property
    def served_model(self) -> str:
        """The model the engines answer for (a `byom:` name once an upload is delivered)."""
        return str(self.routes.get("model_id") or self.model_id)

    def moved(self, target: Status, now: float, reason: str, healthy: bool = False) -> DeploymentRecord:
        """The record after a checked lifecycle transition."""
        lifecycle = (self.lifecycle or Lifecycle(self.status, now)).to(target, now, reason, healthy=healthy)
        return replace(self, status=lifecycle.status, lifecycle=lifecycle)

    def encode(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The store's (spec, routes) JSON columns."""
        meta: dict[str, Any] = {"deployment": self.spec}
        if self.stack is not None:
            meta["stack"] = self.stack
        if self.lifecycle is not None:
            meta["lifecycle"] = self.lifecycle.as_dict()
        if self.meter.changes:
            meta["meter"] = self.meter.as_dict()
        if self.git:
            meta["git"] = True
        return meta, self.routes

    @staticmethod
    def decode(
        dep_id: str,
        org_id: str,
        name: str,
        model_id: str,
        status: str,
        meta: dict[str, Any],
        routes: dict[str, Any],
    ) -> DeploymentRecord:
        """A record from the store's columns (the inverse of `encode`)."""
        lifecycle = meta.get("lifecycle")
        return DeploymentRecord(
            id=dep_id,
            org_id=org_id,
            name=name,
            model_id=model_id,
            status=Status(status),
            spec=dict(meta.get("deployment") or {}),
            stack=meta.get("stack"),
            lifecycle=Lifecycle.from_dict(lifecycle) if lifecycle else None,
            routes=dict(routes or {}),
            meter=Meter.from_dict(meta["meter"]) if meta.get("meter") else Meter(),
            git=bool(meta.get("git")),
        )

"""The deployment state machine (pure): provisioning -> active -> scaling -> teardown -> inactive, plus degraded.

Every transition is checked against the table below and recorded with its time and reason; an illegal one
raises. `active` is entered only when the engine's health check answered over the gateway's network path (the
caller passes that evidence); `degraded` covers failed health and drift found by a refresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum


class Status(StrEnum):
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    SCALING = "scaling"
    DEGRADED = "degraded"
    TEARDOWN = "teardown"
    INACTIVE = "inactive"


S = Status
ALLOWED: dict[Status, frozenset[Status]] = {
    S.PROVISIONING: frozenset({S.ACTIVE, S.DEGRADED, S.TEARDOWN}),
    S.ACTIVE: frozenset({S.SCALING, S.DEGRADED, S.TEARDOWN}),
    S.SCALING: frozenset({S.ACTIVE, S.DEGRADED, S.TEARDOWN, S.INACTIVE}),  # inactive: scaled to zero
    S.DEGRADED: frozenset({S.ACTIVE, S.SCALING, S.TEARDOWN}),
    S.TEARDOWN: frozenset({S.INACTIVE, S.DEGRADED}),
    S.INACTIVE: frozenset({S.PROVISIONING, S.SCALING}),  # wake from zero, or create again
}


class IllegalTransition(ValueError):
    pass


@dataclass(frozen=True)
class Transition:
    at: float
    source: Status | None
    target: Status
    reason: str


@dataclass(frozen=True)
class Lifecycle:
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

    def as_dict(self) -> dict[str, object]:
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

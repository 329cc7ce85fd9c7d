"""The autoscaler's policy (pure): `decide(spec, observation, memory, now) -> Decision`.

Signals: requests waiting and running on the engines (vLLM /metrics), in flight at the gateway, the gateway's
latency against the SLA's TTFT target, and the time since the last request. Load per replica above the target
scales up at once (up to max); below it for a whole stabilization window scales down one step at a time (so a
short lull never flaps); no request for `idle_timeout_seconds` with `scale_to_zero` goes to zero. A request
for a deployment at zero wakes it (the gateway holds the request meanwhile). A thin loop (every 30 s)
observes, calls decide and acts through the lifecycle."""

from __future__ import annotations

import math
from dataclasses import dataclass

from agentcloud.spec import Scaling

UP_WINDOW_S = 0.0  # react to load at once
DOWN_WINDOW_S = 300.0  # load must stay low this long before a replica goes


@dataclass(frozen=True)
class Observation:
    """What the loop saw of one deployment this round."""

    replicas: int
    waiting: int  # requests queued on the engines
    running: int  # requests being served on the engines
    gateway_in_flight: int
    last_request_at: float | None
    wake_requested: bool = False  # a request arrived for a deployment at zero
    slow: bool = False  # the gateway measures p95 time to first token over the SLA target


@dataclass(frozen=True)
class Memory:
    """What the policy remembers between ticks: since when the load asked for fewer replicas."""

    low_since: float | None = None


@dataclass(frozen=True)
class Decision:
    """The replicas the policy wants, why, and what it remembers for the next round."""

    replicas: int
    reason: str
    memory: Memory

    def changes(self, current: int) -> bool:
        return self.replicas != current


def decide(scaling: Scaling, obs: Observation, memory: Memory, now: float) -> Decision:
    lo, hi = scaling.min_replicas, scaling.max_replicas
    if obs.replicas == 0:
        if obs.wake_requested:
            return Decision(max(1, lo), "a request arrived while at zero: wake", Memory())
        return Decision(0, "at zero, no request", memory)
    load = max(obs.waiting + obs.running, obs.gateway_in_flight)
    wanted = max(1, math.ceil(load / scaling.target_in_flight_per_replica))
    idle_for = now - obs.last_request_at if obs.last_request_at is not None else math.inf
    if scaling.scale_to_zero and load == 0 and idle_for >= scaling.idle_timeout_seconds:
        return Decision(
            0,
            f"idle for {idle_for:.0f} s (timeout {scaling.idle_timeout_seconds} s): scale to zero",
            Memory(),
        )
    if obs.slow:
        wanted = max(
            wanted, obs.replicas + 1
        )  # latency over target: one more replica even below the load target
    wanted = min(hi, max(lo if lo > 0 else 1, wanted))
    if wanted > obs.replicas:
        return Decision(
            wanted,
            f"load {load} over {obs.replicas} replica(s) (target "
            f"{scaling.target_in_flight_per_replica} each): scale up",
            Memory(),
        )
    if wanted < obs.replicas:
        since = memory.low_since if memory.low_since is not None else now
        if now - since >= DOWN_WINDOW_S:
            return Decision(
                obs.replicas - 1, f"load {load} low for {now - since:.0f} s: one replica down", Memory()
            )
        return Decision(
            obs.replicas, f"load low for {now - since:.0f} s of {DOWN_WINDOW_S:.0f}: wait", Memory(since)
        )
    return Decision(obs.replicas, "load matches the replicas", Memory())

"""Pure lifecycle pieces with an injected clock: the state machine, the autoscaler policy, SLA evaluation."""

from __future__ import annotations

import pytest

from agentcloud.autoscaler import DOWN_WINDOW_S, Memory, Observation, decide
from agentcloud.records import IllegalTransition, Lifecycle, Status
from agentcloud.sla import MIN_SAMPLES, Sample, SlaMonitor
from agentcloud.spec import Scaling, Sla

S = Status


def test_lifecycle_happy_path_with_history() -> None:
    lc = Lifecycle.new(0.0)
    lc = lc.to(S.ACTIVE, 60.0, "engine healthy", healthy=True)
    lc = lc.to(S.SCALING, 100.0, "replicas 1 -> 2").to(S.ACTIVE, 160.0, "scaled", healthy=True)
    lc = lc.to(S.TEARDOWN, 200.0, "DELETE").to(S.INACTIVE, 260.0, "destroyed")
    assert lc.status is S.INACTIVE and lc.since == 260.0
    assert [t["to"] for t in lc.as_dict()["history"]] == [
        "provisioning",
        "active",
        "scaling",
        "active",
        "teardown",
        "inactive",
    ]


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], S.INACTIVE),  # provisioning cannot jump to inactive
        ([S.TEARDOWN], S.ACTIVE),  # a teardown does not come back to active
        ([S.TEARDOWN, S.INACTIVE], S.ACTIVE),  # waking goes through provisioning or scaling
    ],
)
def test_illegal_transitions_refused(path: list[Status], illegal: Status) -> None:
    lc = Lifecycle.new(0.0)
    for step in path:
        lc = lc.to(step, 1.0, "step", healthy=True)
    with pytest.raises(IllegalTransition):
        lc.to(illegal, 2.0, "illegal", healthy=True)


def test_active_needs_a_health_check() -> None:
    with pytest.raises(IllegalTransition, match="health check"):
        Lifecycle.new(0.0).to(S.ACTIVE, 1.0, "trust me")


SCALING = Scaling(
    min_replicas=0,
    max_replicas=4,
    scale_to_zero=True,
    idle_timeout_seconds=300,
    target_in_flight_per_replica=10,
)


def obs(replicas: int, load: int = 0, last: float | None = 0.0, wake: bool = False) -> Observation:
    return Observation(
        replicas,
        waiting=load // 2,
        running=load - load // 2,
        gateway_in_flight=0,
        last_request_at=last,
        wake_requested=wake,
    )


def test_scale_up_under_queue() -> None:
    d = decide(SCALING, obs(1, load=35, last=99.0), Memory(), 100.0)
    assert d.replicas == 4 and "scale up" in d.reason
    assert decide(SCALING, obs(4, load=400, last=99.0), Memory(), 100.0).replicas == 4  # capped at max


def test_latency_over_target_adds_a_replica() -> None:
    calm = Observation(2, waiting=1, running=1, gateway_in_flight=0, last_request_at=99.0, slow=True)
    d = decide(SCALING, calm, Memory(), 100.0)
    assert d.replicas == 3 and "scale up" in d.reason
    at_max = Observation(4, waiting=0, running=1, gateway_in_flight=0, last_request_at=99.0, slow=True)
    assert decide(SCALING, at_max, Memory(), 100.0).replicas == 4


def test_no_flapping_on_a_short_lull() -> None:
    mem = Memory()
    replicas = 3
    for t in range(0, int(DOWN_WINDOW_S) - 30, 30):  # low load for less than the window
        d = decide(SCALING, obs(replicas, load=5, last=float(t)), mem, float(t))
        mem = d.memory
        assert d.replicas == 3
    d = decide(SCALING, obs(replicas, load=35, last=280.0), mem, 280.0)  # load comes back: memory resets
    assert d.replicas == 4 and d.memory.low_since is None


def test_scale_down_one_step_after_the_window() -> None:
    mem = decide(SCALING, obs(3, load=5, last=0.0), Memory(), 0.0).memory
    d = decide(SCALING, obs(3, load=5, last=DOWN_WINDOW_S), mem, DOWN_WINDOW_S)
    assert d.replicas == 2


def test_scale_to_zero_after_idle_and_wake() -> None:
    assert decide(SCALING, obs(1, load=0, last=0.0), Memory(), 299.0).replicas == 1
    d = decide(SCALING, obs(1, load=0, last=0.0), Memory(), 300.0)
    assert d.replicas == 0 and "scale to zero" in d.reason
    assert decide(SCALING, obs(0), Memory(), 400.0).replicas == 0
    woken = decide(SCALING, obs(0, wake=True), Memory(), 401.0)
    assert woken.replicas == 1 and "wake" in woken.reason
    no_zero = Scaling(min_replicas=1, max_replicas=2)
    assert decide(no_zero, obs(1, load=0, last=0.0), Memory(), 10_000.0).replicas == 1


def test_sla_breach_and_recovery_once_each() -> None:
    monitor = SlaMonitor(Sla(ttft_target_ms=500, throughput_target_tps=50, concurrency_limit=8))
    for i in range(MIN_SAMPLES):
        monitor.observe(Sample(float(i), ttft_ms=900.0, tokens_per_s=80.0, concurrency=2))
    events = monitor.evaluate(20.0)
    assert [(e.kind, e.metric) for e in events] == [("breach", "ttft_p95_ms")]
    assert monitor.evaluate(21.0) == [], "a breach fires once, not every tick"
    for i in range(MIN_SAMPLES * 2):
        monitor.observe(Sample(400.0 + i, ttft_ms=100.0, tokens_per_s=80.0, concurrency=9))
    events = monitor.evaluate(450.0)  # the slow samples left the 300 s window
    assert {(e.kind, e.metric) for e in events} == {("recovered", "ttft_p95_ms"), ("breach", "concurrency")}
    assert len(monitor.history) == 3


def test_sla_needs_enough_samples() -> None:
    monitor = SlaMonitor(Sla(ttft_target_ms=100))
    for i in range(MIN_SAMPLES - 1):
        monitor.observe(Sample(float(i), ttft_ms=5000.0, tokens_per_s=None, concurrency=1))
    assert monitor.evaluate(30.0) == []

"""SLA evaluation (pure) over a sliding window of the gateway's own measurements.

Targets: ttft_target_ms (p95 time to first token), throughput_target_tps (median tokens/s per request), and
concurrency_limit (enforced by the gateway; reported here when reached). A breach is recorded when a target is
missed over the window with enough samples, a recovery when it is met again: each only once per change, so a
webhook fires per event, not per tick.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from agentcloud.spec import Sla

WINDOW_S = 300.0
MIN_SAMPLES = 20
MAX_SAMPLES = 10_000


@dataclass(frozen=True)
class Sample:
    """One request's measurements."""

    at: float
    ttft_ms: float | None
    tokens_per_s: float | None
    concurrency: int


@dataclass(frozen=True)
class SlaEvent:
    """A breach or a recovery of one metric."""

    at: float
    kind: str  # "breach" | "recovered"
    metric: str
    value: float
    target: float

    def as_dict(self) -> dict[str, object]:
        return {
            "at": self.at,
            "event": self.kind,
            "metric": self.metric,
            "value": round(self.value, 2),
            "target": self.target,
        }


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class SlaMonitor:
    """Judges one deployment's samples over a sliding window against its targets."""

    sla: Sla
    window_s: float = WINDOW_S
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    breached: set[str] = field(default_factory=set)
    history: deque[SlaEvent] = field(default_factory=lambda: deque(maxlen=500))

    def observe(self, sample: Sample) -> None:
        self.samples.append(sample)

    def evaluate(self, now: float) -> list[SlaEvent]:
        while self.samples and self.samples[0].at < now - self.window_s:
            self.samples.popleft()
        current: dict[str, tuple[float, float, bool]] = {}  # metric -> (value, target, missed)
        ttfts = [s.ttft_ms for s in self.samples if s.ttft_ms is not None]
        if self.sla.ttft_target_ms is not None and len(ttfts) >= MIN_SAMPLES:
            p95 = quantile(ttfts, 0.95)
            current["ttft_p95_ms"] = (p95, self.sla.ttft_target_ms, p95 > self.sla.ttft_target_ms)
        rates = [s.tokens_per_s for s in self.samples if s.tokens_per_s is not None]
        if self.sla.throughput_target_tps is not None and len(rates) >= MIN_SAMPLES:
            p50 = quantile(rates, 0.5)
            current["throughput_tps"] = (
                p50,
                self.sla.throughput_target_tps,
                p50 < self.sla.throughput_target_tps,
            )
        if self.sla.concurrency_limit is not None and self.samples:
            peak = max(s.concurrency for s in self.samples)
            current["concurrency"] = (peak, self.sla.concurrency_limit, peak >= self.sla.concurrency_limit)
        events = []
        for metric, (value, target, missed) in current.items():
            if missed and metric not in self.breached:
                self.breached.add(metric)
                events.append(SlaEvent(now, "breach", metric, value, target))
            elif not missed and metric in self.breached:
                self.breached.discard(metric)
                events.append(SlaEvent(now, "recovered", metric, value, target))
        self.history.extend(events)
        return events

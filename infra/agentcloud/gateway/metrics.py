"""In-memory metrics per model and per deployment: counts, tokens, cost, latency / TTFT / tokens-per-second
histograms (fixed log-spaced buckets, so memory is bounded), active concurrency. Exposed as Prometheus text at
/metrics and as JSON on the spec's metrics routes. Recording is a few dict and list operations: no I/O."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

# 0.5 ms .. ~8.5 min, x1.25 per bucket: percentiles within ~12%.
LATENCY_BUCKETS_S = tuple(0.0005 * 1.25**i for i in range(64))
RATE_BUCKETS = tuple(0.5 * 1.25**i for i in range(48))  # tokens/s: 0.5 .. ~20k
# What Prometheus sees: the same buckets for every series of a histogram (so `sum by (le)` works).
EXPORT_LATENCY_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
WAKE_BUCKETS_S = (5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0)  # droplets boot in minutes
MAX_SERIES = 10_000
CLIENT_CLOSED = 499
UNMATCHED = "unmatched"  # the route label of requests no route matched (404, 405)


class Histogram:
    """Counts in fixed log buckets; quantiles within a bucket's width."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def quantile(self, q: float) -> float | None:
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                lo = self.bounds[i - 1] if i > 0 else 0.0
                hi = self.bounds[i] if i < len(self.bounds) else self.bounds[-1]
                return lo + (hi - lo) * ((rank - seen) / n)
            seen += n
        return self.bounds[-1]


@dataclass
class Series:
    """Counters and histograms of one model or deployment."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    active: int = 0
    statuses: dict[int, int] = field(default_factory=dict)  # answers by status
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    ttft: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    tokens_per_s: Histogram = field(default_factory=lambda: Histogram(RATE_BUCKETS))
    # the exported forms, with fixed buckets (the fine ones above give percentiles within ~12%)
    latency_export: Histogram = field(default_factory=lambda: Histogram(EXPORT_LATENCY_S))
    ttft_export: Histogram = field(default_factory=lambda: Histogram(EXPORT_LATENCY_S))

    def snapshot(self) -> dict[str, object]:
        def ms(h: Histogram, q: float) -> float | None:
            v = h.quantile(q)
            return None if v is None else round(v * 1000, 2)

        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.errors / self.requests, 4) if self.requests else 0.0,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "active_concurrency": self.active,
            "latency_ms": {
                "p50": ms(self.latency, 0.5),
                "p95": ms(self.latency, 0.95),
                "p99": ms(self.latency, 0.99),
            },
            "ttft_ms": {"p50": ms(self.ttft, 0.5), "p95": ms(self.ttft, 0.95), "p99": ms(self.ttft, 0.99)},
            "tokens_per_second": {
                "p50": _round(self.tokens_per_s.quantile(0.5)),
                "mean": round(self.tokens_per_s.total / self.tokens_per_s.count, 2)
                if self.tokens_per_s.count
                else None,
            },
        }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


class Metrics:
    """Every series, in memory, exposed as Prometheus text and JSON snapshots."""

    def __init__(self) -> None:
        self.models: dict[str, Series] = {}
        self.deployments: dict[str, Series] = {}
        self.responses: dict[tuple[str, str, int], int] = {}  # (method, route, status) -> answers
        self.replicas: dict[tuple[str, int], Series] = {}  # (deployment, replica) -> what it served
        self.wakes: dict[str, Histogram] = {}  # deployment -> how long requests waited for it to wake
        self.wake_timeouts: dict[str, int] = {}  # deployment -> requests whose hold ended first (503)

    def _series(self, table: dict[Any, Series], name: Any) -> Series | None:
        s = table.get(name)
        if s is None:
            if len(table) >= MAX_SERIES:
                return None
            s = table[name] = Series()
        return s

    def series_for(self, model_id: str, deployment_id: str | None) -> list[Series]:
        """The series a request counts in: its model's, its deployment's (last). An org's own usage is read
        from the store (`GET .../inference/metrics`), never from these process-wide series."""
        found = [self._series(self.models, model_id)]
        if deployment_id:
            found.append(self._series(self.deployments, deployment_id))
        return [s for s in found if s is not None]

    def responded(self, method: str, route: str, status: int) -> None:
        key = (method, route, status)
        n = self.responses.get(key)
        if n is not None:
            self.responses[key] = n + 1
        elif len(self.responses) < MAX_SERIES:
            self.responses[key] = 1

    def woke(self, deployment_id: str, waited_s: float, woken: bool) -> None:
        """A request held while its deployment woke: how long it waited, and whether it was in time."""
        if woken:
            h = self.wakes.get(deployment_id)
            if h is None and len(self.wakes) < MAX_SERIES:
                h = self.wakes[deployment_id] = Histogram(WAKE_BUCKETS_S)
            if h is not None:
                h.observe(waited_s)
        elif deployment_id in self.wake_timeouts or len(self.wake_timeouts) < MAX_SERIES:
            self.wake_timeouts[deployment_id] = self.wake_timeouts.get(deployment_id, 0) + 1

    def started(self, series: list[Series]) -> None:
        for s in series:
            s.active += 1

    def finished(
        self,
        series: list[Series],
        status: int,
        latency_s: float,
        ttft_s: float | None,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
    ) -> None:
        gen_s = latency_s - ttft_s if ttft_s is not None else latency_s
        for s in series:
            s.active -= 1
            s.requests += 1
            s.statuses[status] = s.statuses.get(status, 0) + 1
            if status >= 400 and status != CLIENT_CLOSED:  # a client that went away is not an error
                s.errors += 1
            s.prompt_tokens += prompt_tokens
            s.completion_tokens += completion_tokens
            s.cost_usd += cost_usd
            s.latency.observe(latency_s)
            s.latency_export.observe(latency_s)
            if ttft_s is not None:
                s.ttft.observe(ttft_s)
                s.ttft_export.observe(ttft_s)
            if completion_tokens > 1 and gen_s > 0:
                s.tokens_per_s.observe(completion_tokens / gen_s)

    def replica_served(
        self, deployment_id: str, replica: int, status: int, ttft_s: float | None, completion_tokens: int
    ) -> None:
        """What one replica of a deployment served (the call's own series count it for the deployment)."""
        s = self._series(self.replicas, (deployment_id, replica))
        if s is None:
            return
        s.requests += 1
        s.statuses[status] = s.statuses.get(status, 0) + 1
        s.completion_tokens += completion_tokens
        if ttft_s is not None:
            s.ttft_export.observe(ttft_s)

    def prometheus(self) -> str:
        lines: list[str] = [
            "# HELP agentcloud_http_requests_total answers by method, route (as registered) and status",
            "# TYPE agentcloud_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(self.responses.items()):
            labels = f'method="{method}",route="{esc(route)}",status="{status}"'
            lines.append(f"agentcloud_http_requests_total{{{labels}}} {n}")
        replicas = sorted(self.replicas.items())
        for metric, attr, help_ in (
            ("requests_total", "requests", "requests a deployment's replica answered"),
            ("completion_tokens_total", "completion_tokens", "completion tokens a replica generated"),
        ):
            lines += [
                f"# HELP agentcloud_replica_{metric} {help_}",
                f"# TYPE agentcloud_replica_{metric} counter",
            ]
            for (dep, replica), s in replicas:
                labels = f'deployment="{esc(dep)}",replica="{replica}"'
                lines.append(f"agentcloud_replica_{metric}{{{labels}}} {getattr(s, attr)}")
        lines += [
            "# HELP agentcloud_replica_ttft_seconds time to first token per deployment replica",
            "# TYPE agentcloud_replica_ttft_seconds histogram",
        ]
        for (dep, replica), s in replicas:
            labels = f'deployment="{esc(dep)}",replica="{replica}"'
            lines += _histogram("agentcloud_replica_ttft_seconds", labels, s.ttft_export)
        lines += [
            "# HELP agentcloud_deployment_wake_seconds how long requests waited for a deployment to wake",
            "# TYPE agentcloud_deployment_wake_seconds histogram",
        ]
        for dep, h in self.wakes.items():
            lines += _histogram("agentcloud_deployment_wake_seconds", f'deployment="{esc(dep)}"', h)
        lines += [
            "# HELP agentcloud_deployment_wake_timeouts_total requests whose wait for a wake ran out (503)",
            "# TYPE agentcloud_deployment_wake_timeouts_total counter",
            *(
                f'agentcloud_deployment_wake_timeouts_total{{deployment="{esc(d)}"}} {n}'
                for d, n in self.wake_timeouts.items()
            ),
        ]
        for label, table in (("model", self.models), ("deployment", self.deployments)):
            prefix = f"agentcloud_{label}"
            for metric, kind, help_ in (
                ("requests_total", "counter", "requests answered"),
                ("errors_total", "counter", "requests answered with an error status"),
                ("prompt_tokens_total", "counter", "prompt tokens"),
                ("completion_tokens_total", "counter", "completion tokens"),
                ("cost_usd_total", "counter", "cost in US dollars at the provider's list price"),
                ("active_requests", "gauge", "requests in flight"),
            ):
                lines += [f"# HELP {prefix}_{metric} {help_} per {label}", f"# TYPE {prefix}_{metric} {kind}"]
                attr = {
                    "requests_total": "requests",
                    "errors_total": "errors",
                    "active_requests": "active",
                }.get(metric, metric.removesuffix("_total"))
                for name, s in table.items():
                    lines.append(f'{prefix}_{metric}{{{label}="{esc(name)}"}} {getattr(s, attr)}')
            lines += [
                f"# HELP {prefix}_responses_total answers per {label} by status (499: the client left)",
                f"# TYPE {prefix}_responses_total counter",
            ]
            for name, s in table.items():
                for status, n in sorted(s.statuses.items()):
                    lines.append(f'{prefix}_responses_total{{{label}="{esc(name)}",status="{status}"}} {n}')
            for metric, attr in (("latency_seconds", "latency_export"), ("ttft_seconds", "ttft_export")):
                lines += [
                    f"# HELP {prefix}_{metric} {metric.removesuffix('_seconds')} per {label}",
                    f"# TYPE {prefix}_{metric} histogram",
                ]
                for name, s in table.items():
                    lines += _histogram(f"{prefix}_{metric}", f'{label}="{esc(name)}"', getattr(s, attr))
        return "\n".join(lines) + "\n"


def _histogram(name: str, labels: str, h: Histogram) -> list[str]:
    """A histogram's exposition: every bucket (the same in every series), +Inf, sum and count."""
    lines, cumulative = [], 0
    for bound, n in zip(h.bounds, h.counts, strict=False):
        cumulative += n
        lines.append(f'{name}_bucket{{{labels},le="{bound:g}"}} {cumulative}')
    lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {h.count}')
    lines.append(f"{name}_sum{{{labels}}} {h.total:.6f}")
    lines.append(f"{name}_count{{{labels}}} {h.count}")
    return lines


def esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

"""Usage over a time window, from the store alone (pure): requests, errors, tokens, cost and latency
percentiles per model, per key and per deployment, from the per-minute rollups the gateways wrote (each with
its latency histogram). The same answer whichever gateway replica is asked, and after a restart."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from infra.store import UsageRow
from infra.store.store import LATENCY_BOUNDS_MS

WINDOWS = {"1h": 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600, "30d": 30 * 24 * 3600}
DEFAULT_WINDOW = "24h"


def percentile(counts: list[int], q: float) -> float | None:
    """The q-quantile (ms) of a histogram over LATENCY_BOUNDS_MS, interpolated within its bucket."""
    total = sum(counts)
    if not total:
        return None
    rank, seen = q * total, 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            lo = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
            hi = LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else LATENCY_BOUNDS_MS[-1]
            return round(lo + (hi - lo) * ((rank - seen) / n), 2)
        seen += n
    return LATENCY_BOUNDS_MS[-1]


def summarize(rows: Iterable[UsageRow], by: Callable[[UsageRow], str | None]) -> dict[str, dict[str, Any]]:
    """Totals per ``by(row)`` (rows whose key is None are left out)."""
    acc: dict[str, list[Any]] = {}
    for r in rows:
        name = by(r)
        if name is None:
            continue
        a = acc.setdefault(name, [0, 0, 0, 0, 0.0, 0.0, [0] * (len(LATENCY_BOUNDS_MS) + 1)])
        a[0] += r.requests
        a[1] += r.errors
        a[2] += r.prompt_tokens
        a[3] += r.completion_tokens
        a[4] += r.cost_usd
        a[5] += r.latency_ms_sum
        for i, n in enumerate(r.latency_hist):
            a[6][i] += n
    out = {}
    for name, (requests, errors, prompt, completion, cost, latency_sum, hist) in sorted(acc.items()):
        out[name] = {
            "requests": requests,
            "errors": errors,
            "error_rate": round(errors / requests, 4) if requests else 0.0,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_usd": round(cost, 6),
            "latency_ms": {
                "mean": round(latency_sum / requests, 2) if requests else None,
                "p50": percentile(hist, 0.5),
                "p95": percentile(hist, 0.95),
                "p99": percentile(hist, 0.99),
            },
        }
    return out


def report(rows: list[UsageRow]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per model, per key and per deployment."""
    return {
        "models": summarize(rows, lambda r: r.model_id),
        "keys": summarize(rows, lambda r: r.key_id),
        "deployments": summarize(rows, lambda r: r.deployment_id),
    }

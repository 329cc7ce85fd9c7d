"""Usage over a time window, from the store alone (pure): requests, errors, tokens, cost and latency
percentiles per model, per key and per deployment, from the per-minute rollups the gateways wrote (each with
its latency histogram). The same answer whichever gateway replica is asked, and after a restart."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from agentcloud.store import UsageRow
from agentcloud.store.store import LATENCY_BOUNDS_MS

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


def capacity_cost(capacity_usd: float, rows: list[UsageRow]) -> dict[str, Any]:
    """A deployment's capacity cost over a window, per 1M tokens it served, and attributed to the keys and
    orgs that used it in proportion to their tokens (prompt and completion)."""
    tokens_by_key: dict[str, int] = {}
    org_of: dict[str, str] = {}
    for r in rows:
        tokens_by_key[r.key_id] = tokens_by_key.get(r.key_id, 0) + r.prompt_tokens + r.completion_tokens
        org_of[r.key_id] = r.org_id
    total = sum(tokens_by_key.values())
    by_key = {
        key: {"tokens": n, "share": round(n / total, 4), "cost_usd": round(capacity_usd * n / total, 6)}
        for key, n in sorted(tokens_by_key.items())
        if total
    }
    by_org: dict[str, dict[str, Any]] = {}
    for key, entry in by_key.items():
        org = by_org.setdefault(org_of[key], {"tokens": 0, "cost_usd": 0.0})
        org["tokens"] += entry["tokens"]
        org["cost_usd"] = round(org["cost_usd"] + entry["cost_usd"], 6)
    return {
        "cost_usd": round(capacity_usd, 6),
        "tokens": total,
        "usd_per_mtok": round(capacity_usd / total * 1e6, 4) if total else None,
        "by_key": by_key,
        "by_org": by_org,
    }


def timeline(rows: list[UsageRow], since: float, until: float, points: int = 60) -> dict[str, Any]:
    """The window cut in ``points`` steps (whole minutes): requests, errors, tokens, cost and latency p50/p95
    per step, for charts."""
    step = max(60.0, -(-(until - since) // points // 60) * 60)
    start = since // 60 * 60
    buckets: list[list[UsageRow]] = [[] for _ in range(int(-(-(until - start) // step)))]
    for r in rows:
        i = int((r.minute - start) // step)
        if 0 <= i < len(buckets):
            buckets[i].append(r)
    out = []
    for i, bucket in enumerate(buckets):
        hist = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        for r in bucket:
            for j, n in enumerate(r.latency_hist):
                hist[j] += n
        out.append(
            {
                "t": start + i * step,
                "requests": sum(r.requests for r in bucket),
                "errors": sum(r.errors for r in bucket),
                "tokens": sum(r.prompt_tokens + r.completion_tokens for r in bucket),
                "cost_usd": round(sum(r.cost_usd for r in bucket), 6),
                "p50_ms": percentile(hist, 0.5),
                "p95_ms": percentile(hist, 0.95),
            }
        )
    return {"step_s": step, "points": out}

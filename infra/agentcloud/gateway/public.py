"""Catalog and metrics routes of the data plane."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentcloud import usage
from agentcloud.catalog import Catalog, Model
from agentcloud.gateway import authz
from agentcloud.gateway.asgi import Request
from agentcloud.gateway.errors import bad_request, unauthorized
from agentcloud.gateway.limits import ConcurrencyLimiter
from agentcloud.gateway.metrics import Metrics, esc
from agentcloud.gateway.routing import RouteTable
from agentcloud.store import Store
from agentcloud.store.offload import StoreThread
from agentcloud.upstream.balance import Balancer


@dataclass(frozen=True)
class Observing:
    """What the catalog and metrics handlers need."""

    catalog: Catalog
    routes: RouteTable
    metrics: Metrics
    store: Store
    db: StoreThread
    concurrency: ConcurrencyLimiter
    metrics_token: str | None
    balancer: Balancer


ObservingHandler = Callable[[Observing, Request], Awaitable[None]]


def _card(ctx: Observing, model_id: str, model: Model | None) -> dict[str, Any]:
    providers = ctx.catalog.providers_for(model_id)
    card: dict[str, Any] = {"id": model_id, "object": "model", "owned_by": "agentcloud", "created": 0}
    if model is not None:
        card.update(
            display_name=model.display_name,
            task=model.task.value,
            tier=model.tier,
            context_window=model.context_window,
            capabilities=[model.task.value] + (["dedicated"] if model.deployable else []),
            dedicated=model.deployable,
            providers=[name for name, _ in providers],
            pricing={
                name: {
                    "usd_per_mtok_in": p.models[model_id].usd_per_mtok_in,
                    "usd_per_mtok_out": p.models[model_id].usd_per_mtok_out,
                }
                for name, p in providers
            },
        )
    return card


def _visible(ctx: Observing, plan: str | None, callable_only: bool = False) -> list[dict[str, Any]]:
    """Model cards: the whole catalog, or (``callable_only``) what a key of ``plan`` can call here now."""
    rank = ctx.catalog.plans[plan].rank if plan in ctx.catalog.plans else None
    out = []
    for model_id in ctx.routes.models.keys() | ctx.catalog.models.keys():
        model = ctx.catalog.models.get(model_id)
        if rank is not None and model is not None and ctx.catalog.plans[model.tier].rank > rank:
            continue
        if callable_only and model_id not in ctx.routes.models and not (model and model.deployable):
            continue  # no provider with a configured key serves it, and it is not deployable
        out.append(_card(ctx, model_id, model))
    return sorted(out, key=lambda c: str(c["id"]))


async def models(ctx: Observing, req: Request) -> None:
    await req.json({"object": "list", "data": _visible(ctx, None)})


async def models_available(ctx: Observing, req: Request) -> None:
    key = req.caller
    data = [] if key.kind == "scoped" else _visible(ctx, key.plan, callable_only=True)
    await req.json({"object": "list", "plan": key.plan, "data": data})


async def deployment_models(ctx: Observing, req: Request) -> None:
    """The model a deployment serves, as OpenAI's model list (for an SDK whose base URL is the deployment)."""
    dep_id = req.params["deployment_id"]
    dep = authz.invoke_deployment(req.caller, ctx.routes.deployments.get(dep_id), dep_id)
    card = _card(ctx, dep.model_id, ctx.catalog.models.get(dep.model_id))
    await req.json(
        {"object": "list", "data": [{**card, "deployment_id": dep.id, "status": dep.status.value}]}
    )


async def inference_metrics(ctx: Observing, req: Request) -> None:
    """The caller org's usage over a window (``?window=1h|24h|7d|30d``, 24h by default), from the store alone:
    per model, per key and per deployment, with latency percentiles; what its dedicated capacity cost over the
    window; and a timeline for charts."""
    key = req.caller
    query = dict(
        p.split("=", 1) for p in req.scope.get("query_string", b"").decode("latin-1").split("&") if "=" in p
    )
    window = query.get("window", usage.DEFAULT_WINDOW)
    if window not in usage.WINDOWS:
        raise bad_request(f"window: one of {', '.join(usage.WINDOWS)}", param="window")
    now = time.time()
    since = now - usage.WINDOWS[window]
    rows = await ctx.db(ctx.store.usage_since, key.org_id, since // 60 * 60)
    out = usage.report(rows)
    capacity = {}
    for record in await ctx.db(ctx.store.deployments):
        if record.org_id != key.org_id or not record.meter.changes:
            continue
        served = out["deployments"].get(record.id, {})
        cost = record.meter.cost(since, now)
        tokens = int(served.get("prompt_tokens", 0)) + int(served.get("completion_tokens", 0))
        capacity[record.id] = {
            "cost_usd": round(cost, 6),
            "rate_usd_per_hour": round(record.meter.rate, 4),
            "to_date_usd": round(record.meter.cost(0.0, now), 4),
            "tokens": tokens,  # this org's keys' tokens (other orgs' grants: GET .../deployments/{id}/cost)
            "usd_per_mtok": round(cost / tokens * 1e6, 4) if tokens else None,
        }
    await req.json(
        {
            "object": "inference.metrics",
            "org_id": key.org_id,
            "window": window,
            "since": since,
            **out,
            "capacity": capacity,
            "timeline": usage.timeline(rows, since, now),
        }
    )


async def deployment_metrics(ctx: Observing, req: Request) -> None:
    key = req.caller
    dep_id = req.params["deployment_id"]
    dep = authz.read_deployment(key, ctx.routes.deployments.get(dep_id), dep_id)
    series = ctx.metrics.deployments.get(dep.id)
    snapshot = series.snapshot() if series else {}
    snapshot["active_concurrency"] = (
        await ctx.concurrency.in_flight(dep.id) if dep.concurrency_limit else (series.active if series else 0)
    )
    events = await ctx.db(ctx.store.sla_events, dep.id)
    breaches = [e for e in events if e.get("event") == "breach"]
    await req.json(
        {
            "object": "deployment.metrics",
            "deployment_id": dep.id,
            "model_id": dep.model_id,
            "status": dep.status,
            **snapshot,
            "sla_breaches": breaches,
        }
    )


async def prometheus(ctx: Observing, req: Request) -> None:
    if ctx.metrics_token:
        token = (req.header(b"authorization") or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(token.encode(), ctx.metrics_token.encode()):
            raise unauthorized("metrics need the configured metrics token")
    text = ctx.metrics.prometheus() + _live(ctx) + await ctx.db(_from_store, ctx.store)
    await req.respond(200, text.encode(), b"text/plain; version=0.0.4")


def _from_store(store: Store) -> str:
    """What the store records, the same whichever replica is scraped (take `max`, not `sum`): capacity cost,
    autoscaler decisions and SLA breaches per deployment, and the webhook outbox."""
    now = time.time()
    backlog, oldest = store.outbox_backlog()
    metered = [r for r in store.deployments() if r.meter.changes]
    lines = [
        "# HELP agentcloud_deployment_capacity_cost_usd_total what the deployment's GPU droplets have cost",
        "# TYPE agentcloud_deployment_capacity_cost_usd_total counter",
        *(
            f'agentcloud_deployment_capacity_cost_usd_total{{deployment="{esc(r.id)}"}} '
            f"{r.meter.cost(0.0, now):.6f}"
            for r in metered
        ),
        "# HELP agentcloud_deployment_capacity_usd_per_hour what its replicas running cost an hour now",
        "# TYPE agentcloud_deployment_capacity_usd_per_hour gauge",
        *(
            f'agentcloud_deployment_capacity_usd_per_hour{{deployment="{esc(r.id)}"}} {r.meter.rate:.4f}'
            for r in metered
        ),
    ]
    decisions = store.scaling_counts()
    lines += [
        "# HELP agentcloud_autoscaler_decisions_total the autoscaler's changes (up, down, zero) and wakes",
        "# TYPE agentcloud_autoscaler_decisions_total counter",
        *(
            f'agentcloud_autoscaler_decisions_total{{deployment="{esc(d)}",direction="{k}"}} {n}'
            for (d, k), n in sorted(decisions.items())
        ),
    ]
    counts, breached = store.sla_state()
    lines += [
        "# HELP agentcloud_deployment_sla_breaches_total SLA breaches recorded",
        "# TYPE agentcloud_deployment_sla_breaches_total counter",
        *(
            f'agentcloud_deployment_sla_breaches_total{{deployment="{esc(d)}"}} {n}'
            for d, n in sorted(counts.items())
        ),
        "# HELP agentcloud_deployment_sla_breached 1 while a deployment's SLA metric is breached",
        "# TYPE agentcloud_deployment_sla_breached gauge",
        *(
            f'agentcloud_deployment_sla_breached{{deployment="{esc(d)}",metric="{esc(m)}"}} 1'
            for d, m in sorted(breached)
        ),
    ]
    age = max(0.0, now - oldest) if oldest is not None else 0.0
    lines += [
        "# HELP agentcloud_webhook_outbox_pending webhook deliveries waiting (retries included)",
        "# TYPE agentcloud_webhook_outbox_pending gauge",
        f"agentcloud_webhook_outbox_pending {backlog}",
        "# HELP agentcloud_webhook_outbox_oldest_age_seconds how long the oldest waiting delivery has waited",
        "# TYPE agentcloud_webhook_outbox_oldest_age_seconds gauge",
        f"agentcloud_webhook_outbox_oldest_age_seconds {age:.1f}",
    ]
    return "\n".join(lines) + "\n"


def _live(ctx: Observing) -> str:
    """Gauges read at scrape time: each replica's load, queue and health (what the routing sees), and each
    upstream's circuit."""
    b = ctx.balancer
    replicas = [
        (dep.id, i, t.base_url) for dep in ctx.routes.deployments.values() for i, t in enumerate(dep.targets)
    ]
    lines: list[str] = []
    for metric, help_, value in (
        ("in_flight", "requests this process has in flight at a deployment's replica", b.in_flight.get),
        ("queue", "requests waiting in the replica's engine (its /metrics)", b.waiting.get),
        ("up", "1 when the replica's last health probe answered", None),
    ):
        lines += [f"# HELP agentcloud_replica_{metric} {help_}", f"# TYPE agentcloud_replica_{metric} gauge"]
        for dep_id, i, url in replicas:
            n = int(url not in b.unhealthy) if value is None else value(url, 0)
            lines.append(f'agentcloud_replica_{metric}{{deployment="{esc(dep_id)}",replica="{i}"}} {n}')
    lines += [
        "# HELP agentcloud_upstream_circuit_open 1 while an upstream's circuit breaker is open or half-open",
        "# TYPE agentcloud_upstream_circuit_open gauge",
    ]
    for url, breaker in sorted(ctx.routes.breakers.by_url.items()):
        lines.append(
            f'agentcloud_upstream_circuit_open{{upstream="{esc(url)}"}} {int(breaker.state != "closed")}'
        )
    return "\n".join(lines) + "\n"

"""Admission and accounting of upstream calls: token reservations, deployment concurrency, metrics, usage, and
what the control plane needs to see (per-request samples, last request, in-flight load), written to the store
in batches off the request path.

Hot-path rules (reference/gateway-performance.md): metrics in memory, usage as per-minute rollups (no object
per request), no store round trip per request."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from infra.catalog import Catalog
from infra.gateway.asgi import Request
from infra.gateway.errors import GatewayError
from infra.gateway.limits import ConcurrencyLimiter, MemoryRateLimiter, RateLimiter
from infra.gateway.metrics import CLIENT_CLOSED, Metrics, Series
from infra.gateway.routing import Deployment
from infra.store import Sample, Store, UsageRow
from infra.store.keys import KeyRecord
from infra.store.offload import StoreThread
from infra.upstream.target import Target

log = logging.getLogger("agentcloud.gateway")


@dataclass
class Call:
    """Accounting for one upstream call: filled by the handler, settled by the accounting middleware."""

    key: KeyRecord
    model_id: str
    deployment: Deployment | None
    estimate_tokens: int
    series: list[Series]
    started_s: float = field(default_factory=time.perf_counter)
    status: int = 200
    ttft_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    target: Target | None = None
    lease: str | None = None  # the deployment concurrency slot held, if any

    @property
    def cost_usd(self) -> float:
        return self.target.cost(self.prompt_tokens, self.completion_tokens) if self.target else 0.0


class Plans:
    """A key's effective limits: its own overrides, else its plan's."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def limits(self, key: KeyRecord) -> tuple[int | None, int | None]:
        """(requests/min, tokens/min); a key whose plan the catalog lacks is refused, never unlimited."""
        plan = self.catalog.plans.get(key.plan)
        if plan is None:
            raise GatewayError(
                403,
                f"this key's plan {key.plan!r} is not in the catalog; an admin must move the key to one of: "
                f"{', '.join(sorted(self.catalog.plans))}",
                "permission_error",
                code="unknown_plan",
            )
        rpm = key.requests_per_minute or plan.requests_per_minute
        tpm = key.tokens_per_minute or plan.tokens_per_minute
        return rpm, tpm


class Admission:
    """Requests/min before the body is read; then, once the handler knows the model, tokens/min and the
    deployment's concurrency limit (`begin`)."""

    def __init__(
        self, plans: Plans, limiter: RateLimiter, concurrency: ConcurrencyLimiter, metrics: Metrics
    ) -> None:
        self.plans, self.limiter, self.concurrency, self.metrics = plans, limiter, concurrency, metrics

    async def admit(self, req: Request) -> None:
        """Count the request against the plan's requests/min (bad requests count too). The headers go on
        whatever response follows, 429 included."""
        rpm, _ = self.plans.limits(req.caller)
        decision = await self.limiter.check(req.caller.id, rpm, None, 0)
        if decision is None:
            return
        req.extra_headers = decision.headers()
        if not decision.allowed:
            raise GatewayError(
                429,
                "request rate limit exceeded for this key's plan; retry after Retry-After seconds",
                "rate_limit_error",
                code="rate_limit_exceeded",
            )

    async def begin(self, req: Request, model_id: str, dep: Deployment | None, estimate: int) -> Call:
        """Reserve the token estimate and a concurrency slot; the call is settled by the accounting middleware
        on every exit path."""
        key = req.caller
        _, tpm = self.plans.limits(key)
        decision = await self.limiter.check(key.id, None, tpm, estimate)
        if decision is not None:
            if not req.extra_headers:  # a plan with a token rate only
                req.extra_headers = decision.headers()
            if not decision.allowed:
                retry = next(v for k, v in decision.headers() if k == b"retry-after")
                req.extra_headers = [h for h in req.extra_headers if h[0] != b"retry-after"] + [
                    (b"retry-after", retry)
                ]
                raise GatewayError(
                    429,
                    "token rate limit exceeded for this key's plan; retry after Retry-After seconds",
                    "rate_limit_error",
                    code="token_rate_limit_exceeded",
                )
        lease = None
        if dep is not None and dep.concurrency_limit:
            lease = await self.concurrency.acquire(dep.id, dep.concurrency_limit)
            if lease is None:
                raise GatewayError(
                    429,
                    f"deployment {dep.id} is at its concurrency limit ({dep.concurrency_limit})",
                    "rate_limit_error",
                    code="concurrency_limit",
                    headers={"Retry-After": "1"},
                )
        series = self.metrics.series_for(model_id, dep.id if dep else None, key.org_id)
        call = Call(key, model_id, dep, estimate, series, lease=lease)
        self.metrics.started(series)
        req.calls.append(call)
        return call


class Accountant:
    """Settles calls: tokens, concurrency, metrics, usage rollups and the control plane's observations;
    flushes them to the store every ``flush_s``."""

    def __init__(
        self,
        plans: Plans,
        limiter: RateLimiter,
        concurrency: ConcurrencyLimiter,
        metrics: Metrics,
        store: Store,
        db: StoreThread,
        process: str,
        queue_max: int = 100_000,
    ) -> None:
        self.plans, self.limiter, self.concurrency, self.metrics = plans, limiter, concurrency, metrics
        self.store, self.db, self.process, self.queue_max = store, db, process, queue_max
        # (minute, key, org, model, deployment) -> [requests, errors, prompt, completion, cost, latency ms]
        self.usage: dict[tuple[float, str, str, str, str | None], list[float]] = {}
        self.samples: list[Sample] = []
        self.last_request: dict[str, float] = {}
        self.dropped = 0
        self.reported_load = False

    async def settle(self, call: Call) -> None:
        """Runs on every exit path of a call, cancellation included."""
        elapsed = time.perf_counter() - call.started_s
        dep = call.deployment
        if call.lease is not None and dep is not None:
            await asyncio.shield(self.concurrency.release(dep.id, call.lease))
        _, tpm = self.plans.limits(call.key)
        delta = call.prompt_tokens + call.completion_tokens - call.estimate_tokens
        if tpm and delta:
            if isinstance(self.limiter, MemoryRateLimiter):
                self.limiter.settle_now(call.key.id, tpm, delta)
            else:  # a network call: finish it even if this request is being cancelled
                await asyncio.shield(self.limiter.settle(call.key.id, tpm, delta))
        now = time.time()
        if dep is not None:  # the SLA and the autoscaler judge on the gateway's own measurements
            gen_s = elapsed - (call.ttft_s or 0.0)
            tps = call.completion_tokens / gen_s if call.completion_tokens > 1 and gen_s > 0 else None
            ttft_ms = call.ttft_s * 1000 if call.ttft_s is not None else None
            if len(self.samples) < self.queue_max:
                self.samples.append(
                    Sample(dep.id, now, ttft_ms, tps, call.series[-1].active if call.series else 0)
                )
            self.last_request[dep.id] = now
        self.metrics.finished(
            call.series,
            call.status,
            elapsed,
            call.ttft_s,
            call.prompt_tokens,
            call.completion_tokens,
            call.cost_usd,
        )
        slot = (now // 60 * 60, call.key.id, call.key.org_id, call.model_id, dep.id if dep else None)
        acc = self.usage.get(slot)
        if acc is None:
            if len(self.usage) >= self.queue_max:  # the store is down for long: bounded memory
                self.dropped += 1
                return
            acc = self.usage[slot] = [0, 0, 0, 0, 0.0, 0.0]
        acc[0] += 1
        if call.status >= 400 and call.status != CLIENT_CLOSED:
            acc[1] += 1
        acc[2] += call.prompt_tokens
        acc[3] += call.completion_tokens
        acc[4] += call.cost_usd
        acc[5] += elapsed * 1000

    async def flush(self) -> None:
        """Write what accumulated since the last flush; on failure the usage stays queued (bounded)."""
        load = {d: s.active for d, s in self.metrics.deployments.items() if s.active}
        if load or self.reported_load:  # report until every deployment is back at zero once
            await self.db(self.store.report_load, self.process, load, time.time())
            self.reported_load = bool(load)
        if self.samples or self.last_request:
            samples, self.samples = self.samples, []
            touched, self.last_request = self.last_request, {}
            await self.db(self.store.add_samples, samples)
            await self.db(self.store.touch, touched)
        if not self.usage:
            return
        batch, self.usage = self.usage, {}
        rows = [
            UsageRow(*k, int(v[0]), int(v[1]), int(v[2]), int(v[3]), v[4], v[5]) for k, v in batch.items()
        ]
        try:
            await self.db(self.store.add_usage, rows)
        except Exception:
            for k, v in batch.items():  # keep the counts for the next flush
                acc = self.usage.setdefault(k, [0, 0, 0, 0, 0.0, 0.0])
                for i, x in enumerate(v):
                    acc[i] += x
            raise

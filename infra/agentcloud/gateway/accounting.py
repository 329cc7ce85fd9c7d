"""Admission and accounting of upstream calls: token reservations, deployment concurrency, metrics, usage, and
what the control plane needs to see (per-request samples, last request, in-flight load), written to the store
in batches off the request path.

Hot-path rules (reference/gateway-performance.md): metrics in memory, usage appended to a local journal (one
write per request, see journal.py) and written to the store as per-minute rollups, no store round trip per
request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentcloud.catalog import Catalog
from agentcloud.gateway.asgi import Request
from agentcloud.gateway.errors import GatewayError
from agentcloud.gateway.journal import Rollups, UsageJournal, read_segment, rows_of
from agentcloud.gateway.journal import add as add_usage
from agentcloud.gateway.journal import entry as journal_entry
from agentcloud.gateway.limits import ConcurrencyLimiter, MemoryRateLimiter, RateLimiter, SharedStateError
from agentcloud.gateway.metrics import CLIENT_CLOSED, Metrics, Series
from agentcloud.gateway.routing import Deployment
from agentcloud.store import Sample, Store, UsageRow
from agentcloud.store.keys import KeyRecord
from agentcloud.store.offload import StoreThread
from agentcloud.upstream.target import Target

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
    recorded: bool = False  # in the usage journal

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
            if not decision.allowed:  # the headers now describe the limit that refused: the token rate
                req.extra_headers = [
                    h for h in req.extra_headers if not h[0].startswith((b"x-ratelimit-", b"retry-after"))
                ] + decision.headers()
                raise GatewayError(
                    429,
                    "token rate limit exceeded for this key's plan; retry after Retry-After seconds",
                    "rate_limit_error",
                    code="token_rate_limit_exceeded",
                )
        lease = None
        if dep is not None and dep.concurrency_limit:
            try:
                lease = await self.concurrency.acquire(dep.id, dep.concurrency_limit)
            finally:
                if lease is None and decision is not None and tpm:  # refused: give the tokens back
                    with contextlib.suppress(SharedStateError):
                        await self.limiter.settle(key.id, tpm, -min(estimate, tpm))
            if lease is None:
                raise GatewayError(
                    429,
                    f"deployment {dep.id} is at its concurrency limit ({dep.concurrency_limit})",
                    "rate_limit_error",
                    code="concurrency_limit",
                    headers={"Retry-After": "1"},
                )
        series = self.metrics.series_for(model_id, dep.id if dep else None)
        call = Call(key, model_id, dep, estimate, series, lease=lease)
        self.metrics.started(series)
        req.calls.append(call)
        return call


class Accountant:
    """Settles calls: tokens, concurrency, metrics, usage (through the journal) and the control plane's
    observations; flushes them to the store every ``flush_s``."""

    def __init__(
        self,
        plans: Plans,
        limiter: RateLimiter,
        concurrency: ConcurrencyLimiter,
        metrics: Metrics,
        store: Store,
        db: StoreThread,
        process: str,
        journal_dir: Path,
        queue_max: int = 100_000,
    ) -> None:
        self.plans, self.limiter, self.concurrency, self.metrics = plans, limiter, concurrency, metrics
        self.store, self.db, self.process, self.queue_max = store, db, process, queue_max
        self.journal_dir = journal_dir
        self.journal: UsageJournal | None = None  # opened at start (it names the store)
        self.usage: Rollups = {}  # this second's usage, also in the journal's current segment
        self.sealed_usage: list[UsageRow] = []  # the sealed segment's, until the store has it
        self.samples: list[Sample] = []
        self.last_request: dict[str, float] = {}
        self.reported_load = False
        self.journal_errors = 0
        self.usage_overflow = False  # the current segment's rollups exceeded queue_max: read its file

    async def start(self) -> None:
        store_id = await self.db(self.store.store_id)
        self.journal = UsageJournal(self.journal_dir, store_id, self.process)
        await self.flush()  # what a killed process left behind

    def record(self, call: Call) -> None:
        """Journal the call's usage and add it to this second's rollups (once): called before the response's
        last byte, and at settling."""
        if call.recorded:
            return
        call.recorded = True
        assert self.journal is not None, "Accountant.start() was not awaited"
        key, dep = call.key, call.deployment
        item = journal_entry(
            time.time() // 60 * 60,
            key.id,
            key.org_id,
            call.model_id,
            dep.id if dep else None,
            call.status >= 400 and call.status != CLIENT_CLOSED,
            call.prompt_tokens,
            call.completion_tokens,
            call.cost_usd,
            (time.perf_counter() - call.started_s) * 1000,
        )
        if len(self.usage) < self.queue_max:  # what the store gets at the next flush
            add_usage(self.usage, item)
        else:  # a long store outage: stop growing; the segment is read back from its file instead
            self.usage_overflow = True
        try:
            self.journal.append(item)  # what survives if the process dies before that
        except OSError as exc:  # a full or broken disk must not fail the request: say so loudly
            self.journal_errors += 1
            log.error("usage journal write failed (%s): this call's usage is kept in memory only", exc)

    def record_calls(self, req: Request) -> None:
        for call in req.calls:
            self.record(call)

    async def settle(self, call: Call) -> None:
        """Runs on every exit path of a call, cancellation included; a shared state that fails (Redis down)
        cannot keep the gauges, the journal or the metrics from settling."""
        elapsed = time.perf_counter() - call.started_s
        dep = call.deployment
        try:
            self.record(call)
        finally:
            self.metrics.finished(
                call.series,
                call.status,
                elapsed,
                call.ttft_s,
                call.prompt_tokens,
                call.completion_tokens,
                call.cost_usd,
            )
            if dep is not None:  # the SLA and the autoscaler judge on the gateway's own measurements
                self._observe(call, dep.id, elapsed)
                replica = _replica_of(dep, call.target)
                if replica is not None:
                    self.metrics.replica_served(
                        dep.id, replica, call.status, call.ttft_s, call.completion_tokens
                    )
            await self._release(call)

    def _observe(self, call: Call, deployment_id: str, elapsed: float) -> None:
        now = time.time()
        gen_s = elapsed - (call.ttft_s or 0.0)
        tps = call.completion_tokens / gen_s if call.completion_tokens > 1 and gen_s > 0 else None
        ttft_ms = call.ttft_s * 1000 if call.ttft_s is not None else None
        if len(self.samples) < self.queue_max:
            self.samples.append(
                Sample(deployment_id, now, ttft_ms, tps, call.series[-1].active if call.series else 0)
            )
        self.last_request[deployment_id] = now

    async def _release(self, call: Call) -> None:
        """Give back the concurrency slot and settle the token reservation; a network call finishes even if
        this request is being cancelled, and a failing one is logged (Redis expires its slots by itself)."""
        dep = call.deployment
        _, tpm = self.plans.limits(call.key)
        delta = call.prompt_tokens + call.completion_tokens - call.estimate_tokens
        try:
            if call.lease is not None and dep is not None:
                await asyncio.shield(self.concurrency.release(dep.id, call.lease))
            if tpm and delta:
                if isinstance(self.limiter, MemoryRateLimiter):
                    self.limiter.settle_now(call.key.id, tpm, delta)
                else:
                    await asyncio.shield(self.limiter.settle(call.key.id, tpm, delta))
        except SharedStateError as exc:
            log.warning("could not settle a call's limits: %s", exc)

    async def flush(self) -> None:
        """Write what accumulated since the last flush; usage stays in the journal until the store has it."""
        load = {d: s.active for d, s in self.metrics.deployments.items() if s.active}
        if load or self.reported_load:  # report until every deployment is back at zero once
            await self.db(self.store.report_load, self.process, load, time.time())
            self.reported_load = bool(load)
        if self.samples or self.last_request:
            samples, self.samples = self.samples, []
            touched, self.last_request = self.last_request, {}
            await self.db(self.store.add_samples, samples)
            await self.db(self.store.touch, touched)
        if self.journal is not None:
            if self.journal.seal():  # the segment and its rollups move together, on the event loop
                sealed, overflow = self.journal.sealed, self.usage_overflow
                current, self.usage, self.usage_overflow = self.usage, {}, False
                if overflow and sealed is not None:
                    self.sealed_usage = (await self.db(read_segment, sealed.path))[1]
                else:
                    self.sealed_usage = rows_of(current)
            await self.db(self.journal.apply, self._apply, self.sealed_usage)
            self.sealed_usage = []

    def _apply(self, segment: str, rows: list[UsageRow]) -> bool:
        return self.store.add_usage(rows, segment=segment)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()


def _replica_of(dep: Deployment, target: Target | None) -> int | None:
    """The replica's index in the deployment's targets (its `replica` label), or None."""
    if target is None:
        return None
    for i, t in enumerate(dep.targets):
        if t.base_url == target.base_url:
            return i
    return None

"""The gateway as an ASGI application: dispatch, authentication, limits, metrics and usage around handlers.

Hot-path rules (reference/gateway-performance.md): no framework, no per-request database round trip (keys come
from a bounded TTL cache), bodies forwarded as received when nothing in them changes, metrics in memory, usage
written in batches by a background task, no logging of keys or bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from infra.catalog import Catalog, load_catalog
from infra.gateway import keys as keymod
from infra.gateway.asgi import Request, bearer_token, parse_headers
from infra.gateway.cache import MISSING, TtlCache
from infra.gateway.config import GatewayConfig
from infra.gateway.errors import GatewayError, unauthorized
from infra.gateway.keys import KeyRecord
from infra.gateway.limits import (
    ConcurrencyLimiter,
    MemoryConcurrency,
    MemoryRateLimiter,
    RateLimiter,
    RedisConcurrency,
    RedisRateLimiter,
)
from infra.gateway.metrics import Metrics
from infra.gateway.proxy import Timeouts, Upstreams
from infra.gateway.routing import Deployment, RouteTable, Target, deployment_from, from_catalog, load_routes
from infra.gateway.store import Store, UsageRow
from infra.sla import Sample

log = logging.getLogger("agentcloud.gateway")
Handler = Callable[["Gateway", Request], Awaitable[None]]
T = TypeVar("T")


@dataclass
class Call:
    """Accounting for one upstream call: filled by the handler, settled by Gateway.account()."""

    key: KeyRecord
    model_id: str
    deployment: Deployment | None
    estimate_tokens: int
    started_s: float = field(default_factory=time.perf_counter)
    status: int = 200
    ttft_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    target: Target | None = None

    @property
    def cost_usd(self) -> float:
        return self.target.cost(self.prompt_tokens, self.completion_tokens) if self.target else 0.0


class Router:
    def __init__(self) -> None:
        self.static: dict[tuple[str, str], Handler] = {}
        self.dynamic: list[tuple[str, re.Pattern[str], Handler]] = []
        self.anthropic_paths: set[str] = set()

    def add(self, method: str, path: str, handler: Handler, anthropic: bool = False) -> None:
        if anthropic:
            self.anthropic_paths.add(path)
        if "{" not in path:
            self.static[(method, path)] = handler
        else:
            pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[A-Za-z0-9_.:-]{1,128})", path)
            self.dynamic.append((method, re.compile(f"^{pattern}$"), handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        handler = self.static.get((method, path))
        if handler is not None:
            return handler, {}
        allowed = any(p == path for (_, p) in self.static)
        for m, pattern, h in self.dynamic:
            found = pattern.match(path)
            if found:
                if m == method:
                    return h, found.groupdict()
                allowed = True
        if allowed:
            raise GatewayError(405, f"method {method} not allowed on {path}", code="method_not_allowed")
        raise GatewayError(404, f"no route {path}", code="unknown_route")


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        catalog: Catalog | None = None,
        store: Store | None = None,
        routes: RouteTable | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog or load_catalog(config.catalog)
        self.store = store or Store(config.database)
        self.routes = routes or from_catalog(self.catalog)
        if routes is None and config.routes_file:
            load_routes(self.routes, Path(config.routes_file))
        self.metrics = Metrics()
        self.key_cache: TtlCache[str, KeyRecord | None] = TtlCache(
            config.key_cache_size, config.key_cache_ttl_s
        )
        self.limiter: RateLimiter = MemoryRateLimiter()
        self.concurrency: ConcurrencyLimiter = MemoryConcurrency()
        self.redis: Any = None
        self.upstreams = Upstreams(
            self.routes,
            Timeouts(config.connect_timeout_s, config.first_byte_timeout_s, config.idle_timeout_s),
        )
        # (minute, key, org, model, deployment) -> [requests, errors, prompt, completion, cost, latency ms]
        self.usage: dict[tuple[float, str, str, str, str | None], list[float]] = {}
        self.usage_dropped = 0
        self.background: list[asyncio.Task[None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None  # set at startup
        # One thread for every store call: the store's connection is serialized anyway.
        self.store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentcloud-store")
        from infra.gateway.uploads import Uploads

        delivery = config.delivery
        if config.ssh_key and delivery.identity_file is None:
            delivery = dataclasses.replace(delivery, identity_file=config.ssh_key)
        self.uploads = Uploads(self, Path(config.upload_dir), config.max_model_bytes, delivery)
        from infra.gateway.webhooks import Policy, WebhookSender

        self.webhooks = WebhookSender(self, Policy(config.webhooks_allow_http, config.webhooks_allow_loopback),
                                      config.webhook_backoff_s, config.webhook_tick_s)  # fmt: skip
        from infra.gateway.deployments_api import DeploymentsApi
        from infra.lifecycle.jobs import JobRunner
        from infra.lifecycle.operations import PulumiStackOps, StackOps
        from infra.spec import STACKS_DIR

        self.stack_ops: StackOps = PulumiStackOps()
        self.stacks_dir = STACKS_DIR
        self.jobs = JobRunner()
        self.deployments_api = DeploymentsApi(self)
        from infra.gateway.autoscale import Autoscaler

        self.autoscaler = Autoscaler(self, config.autoscale_interval_s)
        self.router = Router()
        self.extensions: list[
            Callable[[Gateway], Awaitable[None]]
        ] = []  # startup hooks (lifecycle, autoscaler)
        from infra.gateway import handlers

        handlers.register(self.router)

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.config.redis_url:
            import redis.asyncio as aioredis

            self.redis = aioredis.from_url(self.config.redis_url)
            self.limiter = RedisRateLimiter(self.redis)
            self.concurrency = RedisConcurrency(self.redis)
        self.refresh_deployments_from_store()
        await self.upstreams.start()
        self.background.append(asyncio.create_task(self._flush_usage_forever()))
        w, a = self.webhooks, self.autoscaler
        self.background.append(
            asyncio.create_task(self.leased_loop("webhook-sender", w.holder, w.tick_s, w.send_due))
        )
        self.deployments_api.restore_sla()
        self.background.append(
            asyncio.create_task(self.leased_loop("autoscaler", a.holder, a.interval_s, a.tick))
        )
        for hook in self.extensions:
            await hook(self)

    async def shutdown(self) -> None:
        for task in self.background:
            task.cancel()
        for task in self.background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.background.clear()
        await self.flush_usage()
        await self.upstreams.close()
        self.store_thread.shutdown(wait=True)
        if self.redis is not None:
            await self.redis.aclose()

    def refresh_deployments_from_store(self) -> None:
        for row in self.store.deployments():
            routes = row["routes"] or {}
            entry = {**routes, "id": row["id"], "org_id": row["org_id"], "name": row["name"],
                     "model_id": routes.get("model_id", row["model_id"]), "status": row["status"]}  # fmt: skip
            self.routes.add_deployment(deployment_from(entry))

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store call on the store thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self.store_thread, functools.partial(fn, *args, **kwargs)
        )

    async def leased_loop(
        self, lease: str, holder: str, interval_s: float, work: Callable[[], Awaitable[Any]]
    ) -> None:
        """Run ``work`` every interval on the one replica holding ``lease`` (it moves when its holder stops
        renewing); a failing round is logged and the loop goes on."""
        while True:
            try:
                if await self.db(self.store.acquire_lease, lease, holder, interval_s * 3):
                    await work()
            except Exception:
                log.exception("%s round failed", lease)
            await asyncio.sleep(interval_s)

    async def _flush_usage_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.usage_flush_s)
            try:
                await self.flush_usage()
            except Exception:  # a store outage must not kill the gateway; rows stay queued (bounded)
                log.exception("usage flush failed")

    async def flush_usage(self) -> None:
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

    # -- ASGI --------------------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        req = Request(scope, receive, send, {}, anthropic=path in self.router.anthropic_paths)
        req.headers = parse_headers(scope)
        try:
            handler, req.params = self.router.match(scope["method"], path)
            await handler(self, req)
        except GatewayError as err:
            if not req.started:
                await req.error(err)
        except asyncio.CancelledError:
            if not req.disconnected:
                raise  # a real cancellation (shutdown), not a client that went away
        except Exception:
            log.exception("unhandled error on %s %s (request %s)", scope["method"], path, req.request_id)
            if not req.started:
                await req.error(GatewayError(500, "internal error", "server_error", code="internal_error"))
        finally:
            req.stop_watching()

    # -- shared steps ------------------------------------------------------------------------------------
    async def authenticate(self, req: Request) -> KeyRecord:
        token = bearer_token(req)
        if token is None:
            raise unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        digest = keymod.digest(self.config.pepper, token)
        record = self.key_cache.get(digest, MISSING)
        if record is MISSING:  # negative answers are cached too, so a flood of bad keys stays off the store
            if not keymod.well_formed(token):  # a typo or a random string: no store lookup at all
                raise unauthorized("invalid API key")
            record = await self.db(self.store.key_by_hash, digest)
            self.key_cache.put(digest, record)
        if record is None:
            raise unauthorized("invalid API key")
        if not record.active():
            raise unauthorized("API key revoked or expired")
        assert isinstance(record, KeyRecord)
        return record

    def plan_limits(self, key: KeyRecord) -> tuple[int | None, int | None]:
        plan = self.catalog.plans.get(key.plan)
        rpm = key.requests_per_minute or (plan.requests_per_minute if plan else None)
        tpm = key.tokens_per_minute or (plan.tokens_per_minute if plan else None)
        return rpm, tpm

    async def admit(self, req: Request, key: KeyRecord) -> None:
        """Count the request against the plan's requests/min, before its body is even read (bad requests count
        too). The headers go on whatever response follows, 429 included."""
        rpm, _ = self.plan_limits(key)
        decision = await self.limiter.check(key.id, rpm, None, 0)
        if decision is None:
            return
        req.extra_headers = decision.headers()
        if not decision.allowed:
            raise GatewayError(429, "request rate limit exceeded for this key's plan; retry after Retry-After seconds",
                               "rate_limit_error", code="rate_limit_exceeded")  # fmt: skip

    async def reserve_tokens(self, req: Request, key: KeyRecord, estimate_tokens: int) -> None:
        """Reserve the token estimate against tokens/min; settled with real usage in account()."""
        _, tpm = self.plan_limits(key)
        decision = await self.limiter.check(key.id, None, tpm, estimate_tokens)
        if decision is None:
            return
        if not req.extra_headers:  # a plan with a token rate only
            req.extra_headers = decision.headers()
        if not decision.allowed:
            retry = next(v for k, v in decision.headers() if k == b"retry-after")
            req.extra_headers = [h for h in req.extra_headers if h[0] != b"retry-after"] + [
                (b"retry-after", retry)
            ]
            raise GatewayError(429, "token rate limit exceeded for this key's plan; retry after Retry-After seconds",
                               "rate_limit_error", code="token_rate_limit_exceeded")  # fmt: skip

    async def account(self, call: Call) -> None:
        """Settle tokens, record metrics and usage. Runs on every exit path, cancellation included."""
        elapsed = time.perf_counter() - call.started_s
        _, tpm = self.plan_limits(call.key)
        delta = call.prompt_tokens + call.completion_tokens - call.estimate_tokens
        if tpm and delta:
            if isinstance(self.limiter, MemoryRateLimiter):
                self.limiter.settle_now(call.key.id, tpm, delta)
            else:  # a network call: finish it even if this request is being cancelled
                await asyncio.shield(self.limiter.settle(call.key.id, tpm, delta))
        series = self.metrics.series_for(call.model_id, call.deployment.id if call.deployment else None)
        if call.deployment is not None:
            monitor = self.deployments_api.sla.get(call.deployment.id)
            if monitor is not None:  # the SLA is judged on the gateway's own measurements
                gen_s = elapsed - (call.ttft_s or 0.0)
                monitor.observe(Sample(time.time(), call.ttft_s * 1000 if call.ttft_s is not None else None,
                                       call.completion_tokens / gen_s if call.completion_tokens > 1 and gen_s > 0 else None,
                                       series[-1].active if series else 0))  # fmt: skip
        self.metrics.finished(series, call.status, elapsed, call.ttft_s, call.prompt_tokens, call.completion_tokens,
                              call.cost_usd)  # fmt: skip
        dep_id = call.deployment.id if call.deployment else None
        slot = (time.time() // 60 * 60, call.key.id, call.key.org_id, call.model_id, dep_id)
        acc = self.usage.get(slot)
        if acc is None:
            if len(self.usage) >= self.config.usage_queue_max:  # the store is down for long: bounded memory
                self.usage_dropped += 1
                return
            acc = self.usage[slot] = [0, 0, 0, 0, 0.0, 0.0]
        acc[0] += 1
        if call.status >= 400:
            acc[1] += 1
        acc[2] += call.prompt_tokens
        acc[3] += call.completion_tokens
        acc[4] += call.cost_usd
        acc[5] += elapsed * 1000

    def invalidate_keys(self) -> None:
        self.key_cache.clear()

    def sla_breaches(self, deployment_id: str) -> list[dict[str, Any]]:
        """SLA breach history of a deployment (filled by the SLA monitor when one runs)."""
        return []

"""The data plane, and the ASGI entry that serves whichever planes a process runs.

`DataPlane` holds what serving a request needs: routes, upstreams, authentication, admission, accounting,
metrics, and the sync that keeps routes and keys in step with the store. `Gateway` is the ASGI application:
the middleware chain (see middleware.py) around one router on which each plane registered its routes, and a
lifespan that starts and stops the planes.

Hot-path rules (reference/gateway-performance.md): no framework, no per-request database round trip (keys come
from a bounded TTL cache), bodies forwarded as received when nothing in them changes, metrics in memory, usage
written in batches by a background task, no logging of keys or bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from agentcloud.catalog import Catalog
from agentcloud.gateway import middleware as mw
from agentcloud.gateway import routes as data_routes
from agentcloud.gateway.accounting import Accountant, Admission, Plans
from agentcloud.gateway.cache import TtlCache
from agentcloud.gateway.config import GatewayConfig
from agentcloud.gateway.inference import Serving
from agentcloud.gateway.limits import (
    ConcurrencyLimiter,
    MemoryConcurrency,
    MemoryRateLimiter,
    RateLimiter,
    RedisConcurrency,
    RedisRateLimiter,
)
from agentcloud.gateway.metrics import Metrics
from agentcloud.gateway.probe import ReplicaProbe
from agentcloud.gateway.public import Observing
from agentcloud.gateway.router import Router
from agentcloud.gateway.routing import RouteTable
from agentcloud.gateway.sync import RouteSync, Waker
from agentcloud.store import Store
from agentcloud.store.keys import KeyRecord
from agentcloud.store.offload import StoreThread
from agentcloud.upstream.balance import Balancer
from agentcloud.upstream.proxy import Timeouts, Upstreams

log = logging.getLogger("agentcloud.gateway")


class Plane(Protocol):
    """What the ASGI entry starts and stops."""

    async def startup(self) -> None: ...

    async def shutdown(self) -> None: ...


class DataPlane:
    """Serves requests. Shares state with the control plane only through the store."""

    def __init__(self, config: GatewayConfig, catalog: Catalog, store: Store, routes: RouteTable) -> None:
        self.config, self.catalog, self.store, self.routes = config, catalog, store, routes
        self.process = f"data-{secrets.token_hex(4)}"
        self.db = StoreThread("data")
        self.metrics = Metrics()
        self.key_cache: TtlCache[str, KeyRecord | None] = TtlCache(
            config.key_cache_size, config.key_cache_ttl_s
        )
        self.redis: Any = None
        self.limiter: RateLimiter = MemoryRateLimiter()
        self.concurrency: ConcurrencyLimiter = MemoryConcurrency()
        if config.redis_url:
            import redis.asyncio as aioredis

            # short timeouts: a Redis that hangs answers 503 within a second, it never holds requests
            self.redis = aioredis.from_url(
                config.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0, retry_on_timeout=False
            )
            self.limiter, self.concurrency = RedisRateLimiter(self.redis), RedisConcurrency(self.redis)
        plans = Plans(catalog)
        timeouts = Timeouts(config.connect_timeout_s, config.first_byte_timeout_s, config.idle_timeout_s)
        self.upstreams = Upstreams(routes.breakers, timeouts, Balancer(config.routing_load_factor))
        self.authenticate = mw.Authenticator(store, self.db, config.pepper, self.key_cache)
        self.admission = Admission(plans, self.limiter, self.concurrency, self.metrics)
        self.accountant = Accountant(
            plans,
            self.limiter,
            self.concurrency,
            self.metrics,
            store,
            self.db,
            self.process,
            Path(config.journal_dir),
            config.samples_max,
        )
        self.sync = RouteSync(store, self.db, routes, self.key_cache, config.sync_interval_s)
        self.waker = Waker(store, self.db, routes, self.metrics)
        self.probe = ReplicaProbe(routes, self.upstreams, config.probe_interval_s)
        self.background: list[asyncio.Task[None]] = []

    def register(self, router: Router) -> None:
        """The data plane's routes: inference, catalog, metrics."""
        serving = Serving(self.routes, self.catalog, self.upstreams, self.admission, self.waker, self.config)
        observing = Observing(
            self.catalog,
            self.routes,
            self.metrics,
            self.store,
            self.db,
            self.concurrency,
            self.config.metrics_token,
            self.upstreams.balancer,
        )
        data_routes.register(router, serving, observing)

    async def startup(self) -> None:
        await asyncio.to_thread(self.sync.load_now)
        await self.accountant.start()
        await self.upstreams.start()
        # What start-up made (catalog, routes, imports) lives as long as the process: moved out of the
        # collector's reach, so collections under load scan only what requests allocate (measured: p99 at
        # c=64 35 -> 17 ms, CPU per request -10%; docs/gateway.md).
        gc.collect()
        gc.freeze()
        self.background += [
            asyncio.create_task(self._flush_forever()),
            asyncio.create_task(self.sync.run()),
            asyncio.create_task(self.probe.run()),
        ]

    async def shutdown(self) -> None:
        await cancel(self.background)
        try:
            await self.accountant.flush()
        except Exception:  # the store is down: usage stays in the journal for the next start
            log.exception("usage flush at shutdown failed")
        self.accountant.close()
        await self.upstreams.close()
        self.db.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.usage_flush_s)
            if self.upstreams.pool is not None:
                self.upstreams.pool.sweep()  # idle upstream connections do not stay open forever
            try:
                await self.accountant.flush()
            except Exception:  # a store outage must not kill the gateway; usage stays in the journal
                log.exception("usage flush failed")


async def cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait for them to end."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    tasks.clear()


class Gateway:
    """The ASGI application of one process: the middleware chain around the router, and the planes' lifespan.

    ``data`` always exists (its authentication, metrics and route sync serve the control plane's routes too);
    ``control`` is the control plane when this process runs one."""

    def __init__(self, router: Router, data: DataPlane, planes: list[Plane], control: Any = None) -> None:
        self.router, self.data, self.planes, self.control = router, data, planes, control
        self.loop: asyncio.AbstractEventLoop | None = None  # set at startup
        inner: Callable[[dict[str, Any], Any, Any], Awaitable[None]] = mw.endpoint
        inner = mw.Accounting(inner, data.accountant)
        inner = mw.AdmissionControl(inner, data.admission)
        inner = mw.Authentication(inner, data.authenticate)
        self.app = mw.Errors(mw.Routing(inner, router), router, data.metrics)

    # Shortcuts for operators and tests.
    @property
    def routes(self) -> RouteTable:
        return self.data.routes

    @property
    def metrics(self) -> Metrics:
        return self.data.metrics

    @property
    def store(self) -> Store:
        return self.data.store

    @property
    def config(self) -> GatewayConfig:
        return self.data.config

    @property
    def concurrency(self) -> ConcurrencyLimiter:
        return self.data.concurrency

    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        for plane in self.planes:
            await plane.startup()

    async def shutdown(self) -> None:
        for plane in reversed(self.planes):
            await plane.shutdown()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.app(scope, receive, send)
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

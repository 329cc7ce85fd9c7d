"""How a data plane learns what the control plane changed, through the store alone: it polls the store's
revisions (one small query a second) and reloads deployments when "routes" moved, or empties its key cache
when "keys" moved. In one process the control plane also hands over each saved record at once (`apply`)."""

from __future__ import annotations

import asyncio
import logging
import time

from agentcloud.gateway.cache import TtlCache
from agentcloud.gateway.metrics import Metrics
from agentcloud.gateway.routing import Deployment, RouteTable, deployment_from_record
from agentcloud.records import DeploymentRecord, Status
from agentcloud.store import Store
from agentcloud.store.keys import KeyRecord
from agentcloud.store.offload import StoreThread

log = logging.getLogger("agentcloud.gateway")


class RouteSync:
    """Keeps ``routes.deployments`` and the key cache in step with the store."""

    def __init__(
        self,
        store: Store,
        db: StoreThread,
        routes: RouteTable,
        keys: TtlCache[str, KeyRecord | None],
        interval_s: float = 1.0,
    ) -> None:
        self.store, self.db, self.routes, self.keys, self.interval_s = store, db, routes, keys, interval_s
        self.seen: dict[str, int] = {}

    def load_now(self) -> None:
        """Synchronous first load (at startup, before serving)."""
        self.seen = self.store.revisions()
        self.routes.replace_deployments(self.store.deployments())

    async def poll(self) -> None:
        revisions = await self.db(self.store.revisions)
        if revisions.get("routes") != self.seen.get("routes"):
            self.routes.replace_deployments(await self.db(self.store.deployments))
        if revisions.get("keys") != self.seen.get("keys"):
            self.keys.clear()
        self.seen = revisions

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll()
            except Exception:  # a store outage must not stop serving what is known
                log.exception("route sync failed")

    async def apply(self, record: DeploymentRecord | None) -> None:
        """In-process notification from a control plane: a saved deployment, or None after a key change."""
        if record is None:
            self.keys.clear()
        else:
            self.routes.add_deployment(deployment_from_record(record))


class Waker:
    """A request for a deployment at zero asks the control plane to wake it (through the store) and waits, up
    to the hold, for it to serve; the control plane runs one wake however many requests ask."""

    def __init__(self, store: Store, db: StoreThread, routes: RouteTable, metrics: Metrics) -> None:
        self.store, self.db, self.routes, self.metrics = store, db, routes, metrics

    async def wake(self, dep: Deployment, hold_s: float) -> Deployment | None:
        await self.db(self.store.request_wake, dep.id, time.time())
        started = time.monotonic()
        deadline = started + hold_s
        while time.monotonic() < deadline:
            current = self.routes.deployments.get(dep.id)
            if current is not None and current.status is Status.ACTIVE and current.targets:
                self.metrics.woke(dep.id, time.monotonic() - started, True)
                return current
            await asyncio.sleep(0.1)
        self.metrics.woke(dep.id, time.monotonic() - started, False)
        return None


def hold_seconds(header: str | None, default_s: float, max_s: float) -> float:
    """How long to hold a request while its deployment wakes: X-AgentCloud-Wake-Timeout, bounded."""
    try:
        value = float(header) if header else default_s
    except ValueError:
        value = default_s
    return max(0.0, min(value, max_s))

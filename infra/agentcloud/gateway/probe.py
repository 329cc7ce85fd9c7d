"""The data plane's replica probe: every few seconds each replica of every deployment (and of every routed
model with several endpoints) answers /health and reports its queue; an unhealthy one goes last in every order
until it answers again, and its waiting requests count in its load."""

from __future__ import annotations

import asyncio
import logging

from agentcloud.gateway.routing import RouteTable
from agentcloud.upstream.balance import Balancer
from agentcloud.upstream.engine import probe
from agentcloud.upstream.proxy import Upstreams
from agentcloud.upstream.target import Target

log = logging.getLogger("agentcloud.gateway")


class ReplicaProbe:
    """Feeds the balancer: health and the engine's own queue per replica."""

    def __init__(self, routes: RouteTable, upstreams: Upstreams, interval_s: float) -> None:
        self.routes, self.upstreams, self.interval_s = routes, upstreams, interval_s

    @property
    def balancer(self) -> Balancer:
        return self.upstreams.balancer

    def replicas(self) -> list[Target]:
        seen: dict[str, Target] = {}
        for dep in self.routes.deployments.values():
            if len(dep.targets) > 1:
                seen.update((t.base_url, t) for t in dep.targets)
        for model_id, (_, n) in self.routes.policies.items():
            seen.update((t.base_url, t) for t in self.routes.models.get(model_id, [])[:n])
        return list(seen.values())

    async def round(self) -> None:
        pool = self.upstreams.pool
        targets = self.replicas()
        known = self.balancer.slots
        current = {t.base_url for t in targets}
        for gone in [url for url in known if url not in current]:  # scaled away: forget its slots
            del known[gone]
            self.balancer.slot_state.pop(gone, None)
        if pool is None or not targets:
            return
        states = await asyncio.gather(
            *(probe(pool, t.base_url, t.api_key, with_slots=t.base_url not in known) for t in targets)
        )
        unhealthy, waiting = set(), {}
        for target, state in zip(targets, states, strict=True):
            if not state.healthy:
                unhealthy.add(target.base_url)
                known.pop(target.base_url, None)  # a restarted engine may come back with other settings
            elif state.waiting:
                waiting[target.base_url] = state.waiting
            if state.slots:
                known[target.base_url] = state.slots
        self.balancer.unhealthy, self.balancer.waiting = unhealthy, waiting

    async def run(self) -> None:
        while True:  # a first round at once: slot counts and health before the first requests, where possible
            try:
                await self.round()
            except Exception:
                log.exception("replica probe failed")
            await asyncio.sleep(self.interval_s)

"""The autoscaler loop and waking from zero. Thin: it observes, calls the pure policy (infra.autoscaler.decide)
and acts through the management API's scale_to. Runs on one gateway replica at a time (a lease in the store),
every `autoscale_interval_s` (30 s); each tick also evaluates the SLA monitors and emits their webhooks."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from infra.autoscaler import Memory, Observation, decide
from infra.spec import Scaling

if TYPE_CHECKING:
    from infra.gateway.app import Gateway
    from infra.gateway.routing import Deployment

# waiting and running requests on an engine: vLLM, then llama.cpp
QUEUE_METRICS = {"waiting": ("vllm:num_requests_waiting", "llamacpp:requests_deferred"),
                 "running": ("vllm:num_requests_running", "llamacpp:requests_processing")}  # fmt: skip
SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+([0-9.eE+-]+)$")


def parse_queue(text: str) -> tuple[int, int]:
    """(waiting, running) from Prometheus text, summed over label sets."""
    totals = {"waiting": 0.0, "running": 0.0}
    for line in text.splitlines():
        found = SAMPLE.match(line.strip())
        if found:
            for kind, names in QUEUE_METRICS.items():
                if found.group(1) in names:
                    totals[kind] += float(found.group(2))
    return int(totals["waiting"]), int(totals["running"])


class Autoscaler:
    def __init__(self, gw: Gateway, interval_s: float, clock: Callable[[], float] = time.time) -> None:
        self.gw = gw
        self.interval_s = interval_s
        self.clock = clock
        self.memory: dict[str, Memory] = {}
        self.last_request: dict[str, float] = {}
        self.wakes: dict[str, asyncio.Task[bool]] = {}
        self.holder = f"autoscaler-{id(self):x}"

    def touch(self, dep_id: str) -> None:
        self.last_request[dep_id] = self.clock()

    async def _queue(self, dep: Deployment) -> tuple[int, int]:
        pool = self.gw.upstreams.pool
        waiting = running = 0
        for target in dep.targets:
            headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
            try:
                async with asyncio.timeout(5):
                    assert pool is not None
                    response = await pool.request(
                        target.base_url.removesuffix("/v1") + "/metrics", b"", headers, method="GET"
                    )
                    body = await response.read()
                    response.release()
                w, r = parse_queue(body.decode("utf-8", "replace")) if response.status == 200 else (0, 0)
                waiting, running = waiting + w, running + r
            except (OSError, TimeoutError, AssertionError):
                continue
        return waiting, running

    async def tick(self) -> list[tuple[str, int, str]]:
        """One round; returns the (deployment, replicas, reason) changes it started."""
        now = self.clock()
        actions = []
        for row in await self.gw.db(self.gw.store.deployments):
            spec = (row["spec"] or {}).get("deployment") or {}
            dep = self.gw.routes.deployments.get(row["id"])
            if not spec.get("scaling") or dep is None or dep.name in self.gw.jobs.running:
                continue
            if dep.status not in ("active", "inactive", "degraded"):
                continue
            scaling = Scaling.model_validate(spec["scaling"])
            replicas = 0 if dep.status == "inactive" else len(dep.targets)
            waiting, running = await self._queue(dep) if replicas else (0, 0)
            series = self.gw.metrics.deployments.get(dep.id)
            target_ms = (spec.get("sla") or {}).get("ttft_target_ms")
            p95 = series.ttft.quantile(0.95) if series else None
            slow = bool(
                target_ms
                and p95 is not None
                and series
                and series.ttft.count >= 20
                and p95 * 1000 > target_ms
            )
            obs = Observation(replicas, waiting, running, series.active if series else 0,
                              self.last_request.setdefault(dep.id, now), slow=slow)  # fmt: skip
            decision = decide(scaling, obs, self.memory.get(dep.id, Memory()), now)
            self.memory[dep.id] = decision.memory
            if decision.changes(replicas) and await self.gw.deployments_api.scale_to(
                dep.id, decision.replicas, f"autoscaler: {decision.reason}"
            ):
                actions.append((dep.id, decision.replicas, decision.reason))
        for dep_id, monitor in self.gw.deployments_api.sla.items():
            for event in monitor.evaluate(now):
                kind = "deployment.sla_breach" if event.kind == "breach" else "deployment.recovered"
                await self.gw.webhooks.emit(dep_id, kind, event.as_dict())
        return actions

    async def wake(self, dep: Deployment, hold_s: float) -> Deployment | None:
        """Start one wake for a deployment at zero (single flight) and wait up to ``hold_s`` for it to be
        active; None when it is not (yet), or cannot be woken."""
        row = next((r for r in await self.gw.db(self.gw.store.deployments) if r["id"] == dep.id), None)
        spec = ((row or {}).get("spec") or {}).get("deployment") or {}
        scaling = spec.get("scaling") or {}
        history = (((row or {}).get("spec") or {}).get("lifecycle") or {}).get("history") or [{}]
        if not scaling.get("scale_to_zero") or history[-1].get("reason") != "scaled to zero":
            return None
        self.touch(dep.id)
        task = self.wakes.get(dep.id)
        if task is None or task.done():
            replicas = max(1, int(scaling.get("min_replicas", 1)))
            task = asyncio.get_running_loop().create_task(
                self.gw.deployments_api.scale_to(dep.id, replicas, "woken by a request")
            )
            self.wakes[dep.id] = task
        deadline = time.monotonic() + hold_s
        while time.monotonic() < deadline:
            current = self.gw.routes.deployments.get(dep.id)
            if current is not None and current.status == "active" and current.targets:
                return current
            await asyncio.sleep(0.1)
        return None


def hold_seconds(header: str | None, default_s: float, max_s: float) -> float:
    try:
        value = float(header) if header else default_s
    except ValueError:
        value = default_s
    return max(0.0, min(value, max_s))


__all__ = ["Autoscaler", "hold_seconds", "parse_queue"]

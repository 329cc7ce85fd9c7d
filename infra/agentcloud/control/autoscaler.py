"""The autoscaler loop and waking from zero. Thin: it observes (engine queues, the data planes' in-flight load
and last requests from the store, the SLA monitors), calls the pure policy (agentcloud.autoscaler.decide) and
acts through `Deployments.scale_to`. Runs on one control-plane process at a time (a lease in the store), every
`autoscale_interval_s` (30 s); each round also feeds and evaluates the SLA monitors. Wake requests are picked
up every `wake_poll_s` by `wake_due`, one wake per deployment however many requests ask."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from agentcloud.autoscaler import Memory, Observation, decide
from agentcloud.control.deployments import Deployments
from agentcloud.control.jobs import JobRunner
from agentcloud.control.sla import SlaWatch
from agentcloud.records import Reason, Status
from agentcloud.spec import Scaling
from agentcloud.store import Store
from agentcloud.store.offload import StoreThread
from agentcloud.upstream.engine import probe
from agentcloud.upstream.http_client import HttpPool

LOAD_FRESH_S = 10.0  # a data plane's in-flight report older than this no longer counts


class Autoscaler:
    """One round (`tick`) decides each deployment's replicas; `wake_due` serves wake requests."""

    def __init__(
        self,
        store: Store,
        db: StoreThread,
        deployments: Deployments,
        jobs: JobRunner,
        sla: SlaWatch,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.db, self.deployments, self.jobs, self.sla = store, db, deployments, jobs, sla
        self.interval_s = interval_s
        self.clock = clock
        self.pool: HttpPool | None = None  # set when the control plane starts
        self.memory: dict[str, Memory] = {}
        self.first_seen: dict[str, float] = {}

    async def _queue(self, endpoints: list[str], api_key: str | None) -> tuple[int, int]:
        """Requests waiting and running on the engines, summed (engines that do not answer count 0)."""
        assert self.pool is not None, "control plane not started"
        states = [await probe(self.pool, url, api_key) for url in endpoints]
        return sum(s.waiting for s in states), sum(s.running for s in states)

    async def tick(self) -> list[tuple[str, int, str]]:
        """One round; returns the (deployment, replicas, reason) changes it started."""
        now = self.clock()
        await self.sla.feed(time.time())
        activity = await self.db(self.store.activity)
        in_flight = await self.db(self.store.in_flight, time.time() - LOAD_FRESH_S)
        actions = []
        for record in await self.deployments.all():
            scaling_spec = record.spec.get("scaling")
            if not scaling_spec or await self.jobs.running(record.stack or record.name) is not None:
                continue
            if record.status not in (Status.ACTIVE, Status.INACTIVE, Status.DEGRADED):
                continue
            scaling = Scaling.model_validate(scaling_spec)
            endpoints = list(record.routes.get("endpoints") or [])
            replicas = 0 if record.status is Status.INACTIVE else len(endpoints)
            key_env = record.routes.get("api_key_env")
            api_key = os.environ.get(key_env) if key_env else None
            waiting, running = await self._queue(endpoints, api_key) if replicas else (0, 0)
            last = activity.get(record.id, (None, None))[0]
            last_request_at = max(last or 0.0, self.first_seen.setdefault(record.id, now))
            obs = Observation(
                replicas,
                waiting,
                running,
                in_flight.get(record.id, 0),
                last_request_at,
                slow=self.sla.slow(record.id),
            )
            decision = decide(scaling, obs, self.memory.get(record.id, Memory()), now)
            self.memory[record.id] = decision.memory
            if decision.changes(replicas) and await self.deployments.scale_to(
                record.id, decision.replicas, f"autoscaler: {decision.reason}"
            ):
                actions.append((record.id, decision.replicas, decision.reason))
                await self.db(
                    self.store.add_scaling_event,
                    record.id,
                    time.time(),
                    replicas,
                    decision.replicas,
                    decision.reason,
                )
        await self.sla.evaluate(now)
        return actions

    async def wake_due(self) -> list[str]:
        """Start a wake for each deployment at zero that a request asked for; returns those started."""
        woken = []
        for dep_id, (_, wake_at) in (await self.db(self.store.activity)).items():
            if wake_at is None:
                continue
            record = await self.deployments.get(dep_id)
            scaling = (record.spec.get("scaling") or {}) if record else {}
            asleep = (
                record is not None
                and record.status is Status.INACTIVE
                and scaling.get("scale_to_zero")
                and record.lifecycle is not None
                and record.lifecycle.reason == Reason.SCALED_TO_ZERO
            )
            if not asleep:  # awake, waking, or not ours to wake: the request is answered by its hold
                await self.db(self.store.clear_wake, dep_id)
                continue
            assert record is not None
            replicas = max(1, int(scaling.get("min_replicas", 1)))
            if await self.deployments.scale_to(dep_id, replicas, "woken by a request"):
                self.first_seen[dep_id] = self.clock()
                await self.db(
                    self.store.add_scaling_event, dep_id, time.time(), 0, replicas, "woken by a request"
                )
                await self.db(self.store.clear_wake, dep_id)
                woken.append(dep_id)
        return woken

"""SLA monitors of the deployments that declare targets, fed by the data planes' samples from the store;
breaches and recoveries are kept in the store (any process answers GET .../sla) and sent as signed webhooks.
"""

from __future__ import annotations

from typing import Any

from agentcloud.control.webhooks import WebhookSender
from agentcloud.records import DeploymentRecord
from agentcloud.sla import MIN_SAMPLES, Sample, SlaMonitor, quantile
from agentcloud.spec import Sla
from agentcloud.store import Store
from agentcloud.store.offload import StoreThread


class SlaWatch:
    """One monitor per deployment with targets; `feed` then `evaluate` each autoscaler round."""

    def __init__(self, store: Store, db: StoreThread, webhooks: WebhookSender) -> None:
        self.store, self.db, self.webhooks = store, db, webhooks
        self.monitors: dict[str, SlaMonitor] = {}
        self.fed_until = 0.0

    def restore(self, records: list[DeploymentRecord]) -> None:
        """Monitors for the deployments that declare targets, breached metrics as the store last recorded."""
        for record in records:
            sla = record.spec.get("sla")
            if sla:
                self.set(record.id, Sla.model_validate(sla))
                for event in self.store.sla_events(record.id):
                    breached = self.monitors[record.id].breached
                    (breached.add if event["event"] == "breach" else breached.discard)(event["metric"])

    def set(self, dep_id: str, sla: Sla) -> None:
        old = self.monitors.get(dep_id)
        monitor = self.monitors[dep_id] = SlaMonitor(sla)
        if old is not None:
            monitor.samples, monitor.breached = old.samples, old.breached

    async def feed(self, now: float) -> None:
        """The samples the data planes wrote since the last round."""
        for s in await self.db(self.store.samples_since, self.fed_until, now):
            monitor = self.monitors.get(s.deployment_id)
            if monitor is not None:
                monitor.observe(Sample(s.at, s.ttft_ms, s.tokens_per_s, s.concurrency))
        self.fed_until = now

    async def evaluate(self, now: float) -> None:
        for dep_id, monitor in self.monitors.items():
            for event in monitor.evaluate(now):
                await self.db(self.store.add_sla_event, dep_id, event.as_dict())
                kind = "deployment.sla_breach" if event.kind == "breach" else "deployment.recovered"
                await self.webhooks.emit(dep_id, kind, event.as_dict())

    def slow(self, dep_id: str) -> bool:
        """p95 time to first token over the target, with enough samples (an autoscaler signal)."""
        monitor = self.monitors.get(dep_id)
        if monitor is None or monitor.sla.ttft_target_ms is None:
            return False
        ttfts = [s.ttft_ms for s in monitor.samples if s.ttft_ms is not None]
        return len(ttfts) >= MIN_SAMPLES and quantile(ttfts, 0.95) > monitor.sla.ttft_target_ms

    async def report(self, record: DeploymentRecord) -> dict[str, Any]:
        """GET .../sla: targets, metrics breached now, and the history of breaches and recoveries."""
        history = await self.db(self.store.sla_events, record.id)
        breached: set[str] = set()
        for event in history:
            (breached.add if event["event"] == "breach" else breached.discard)(event["metric"])
        return {
            "deployment_id": record.id,
            "targets": record.spec.get("sla") or {},
            "breached": sorted(breached),
            "history": history,
        }

"""What the store coordinates between processes: leases, change revisions, stack jobs, and the data plane's
observations for the control plane (samples, activity, wake requests, in-flight load)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentcloud.store.sql import Database

SAMPLES_KEPT_S = 3600.0  # per-request samples older than this are pruned


@dataclass(frozen=True)
class JobRow:
    """A stack operation as every process sees it."""

    id: str
    stack: str
    operation: str
    status: str  # queued | running | succeeded | failed | cancelled
    started_at: float
    finished_at: float | None
    error: str | None
    log: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stack": self.stack,
            "operation": self.operation,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "log_tail": list(self.log)[-20:],
        }


@dataclass(frozen=True)
class Sample:
    """One request's measurements on a deployment (the SLA and the autoscaler judge on these)."""

    deployment_id: str
    at: float
    ttft_ms: float | None
    tokens_per_s: float | None
    concurrency: int


class Coordination(Database):
    """Leases, revisions, jobs and data-plane observations."""

    # -- leases: one holder at a time, moving when the holder stops renewing --------------------------------
    def acquire_lease(self, name: str, holder: str, ttl_s: float, now: float | None = None) -> bool:
        """Take or renew ``name`` for ``holder`` until now + ttl; True when held. Atomic in one statement."""
        now = time.time() if now is None else now
        self._exec(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "holder = excluded.holder, expires_at = excluded.expires_at "
            "WHERE leases.holder = excluded.holder OR leases.expires_at < ?",
            (name, holder, now + ttl_s, now),
        )
        rows = self._exec("SELECT holder FROM leases WHERE name = ?", (name,))
        return bool(rows) and rows[0][0] == holder

    def release_lease(self, name: str, holder: str) -> None:
        self._exec("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def lease_holder(self, name: str, now: float | None = None) -> str | None:
        now = time.time() if now is None else now
        rows = self._exec("SELECT holder FROM leases WHERE name = ? AND expires_at >= ?", (name, now))
        return str(rows[0][0]) if rows else None

    # -- revisions: data planes poll these to learn of route and key changes ---------------------------------
    def bump(self, topic: str) -> None:
        self._exec(
            "INSERT INTO revisions (topic, rev) VALUES (?, 1) "
            "ON CONFLICT (topic) DO UPDATE SET rev = revisions.rev + 1",
            (topic,),
        )

    def revisions(self) -> dict[str, int]:
        return {str(t): int(r) for t, r in self._exec("SELECT topic, rev FROM revisions")}

    # -- stack jobs (one per stack across every process: see control/jobs.py) --------------------------------
    def save_job(self, job: JobRow) -> None:
        self._exec(
            "INSERT INTO jobs (id, stack, operation, status, started_at, finished_at, error, log) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
            "finished_at = excluded.finished_at, error = excluded.error, log = excluded.log",
            (
                job.id,
                job.stack,
                job.operation,
                job.status,
                job.started_at,
                job.finished_at,
                job.error,
                json.dumps(list(job.log)),
            ),
        )

    def job(self, job_id: str) -> JobRow | None:
        rows = self._exec(
            "SELECT id, stack, operation, status, started_at, finished_at, error, log FROM jobs WHERE id = ?",
            (job_id,),
        )
        return self._job(rows[0]) if rows else None

    def stack_jobs(self, stack: str, limit: int = 20) -> list[JobRow]:
        rows = self._exec(
            "SELECT id, stack, operation, status, started_at, finished_at, error, log FROM jobs "
            "WHERE stack = ? "
            "ORDER BY started_at DESC LIMIT ?",
            (stack, limit),
        )
        return [self._job(r) for r in rows]

    @staticmethod
    def _job(row: tuple[Any, ...]) -> JobRow:
        jid, stack, op, status, started, finished, error, log = row
        return JobRow(jid, stack, op, status, float(started), finished, error, tuple(json.loads(log)))

    # -- observations the data plane writes for the control plane --------------------------------------------
    def add_samples(self, samples: Sequence[Sample]) -> None:
        if samples:
            self._many(
                "INSERT INTO deployment_samples (deployment_id, at, ttft_ms, tokens_per_s, concurrency) "
                "VALUES (?, ?, ?, ?, ?)",
                [(s.deployment_id, s.at, s.ttft_ms, s.tokens_per_s, s.concurrency) for s in samples],
            )

    def samples_since(self, since: float, until: float) -> list[Sample]:
        """Samples in (since, until], oldest first; prunes those past the retention window."""
        self._exec("DELETE FROM deployment_samples WHERE at < ?", (until - SAMPLES_KEPT_S,))
        rows = self._exec(
            "SELECT deployment_id, at, ttft_ms, tokens_per_s, concurrency FROM deployment_samples "
            "WHERE at > ? AND at <= ? ORDER BY at",
            (since, until),
        )
        return [Sample(str(r[0]), float(r[1]), r[2], r[3], int(r[4])) for r in rows]

    def touch(self, last_request: dict[str, float]) -> None:
        """The latest request time per deployment (never moves backwards)."""
        for dep_id, at in last_request.items():
            self._exec(
                "INSERT INTO deployment_activity (deployment_id, last_request_at) VALUES (?, ?) "
                "ON CONFLICT (deployment_id) DO UPDATE SET last_request_at = excluded.last_request_at "
                "WHERE deployment_activity.last_request_at IS NULL "
                "OR deployment_activity.last_request_at < excluded.last_request_at",
                (dep_id, at),
            )

    def request_wake(self, dep_id: str, at: float) -> None:
        self._exec(
            "INSERT INTO deployment_activity (deployment_id, last_request_at, wake_requested_at) "
            "VALUES (?, ?, ?) "
            "ON CONFLICT (deployment_id) DO UPDATE SET wake_requested_at = excluded.wake_requested_at, "
            "last_request_at = excluded.last_request_at",
            (dep_id, at, at),
        )

    def clear_wake(self, dep_id: str) -> None:
        self._exec(
            "UPDATE deployment_activity SET wake_requested_at = NULL WHERE deployment_id = ?", (dep_id,)
        )

    def activity(self) -> dict[str, tuple[float | None, float | None]]:
        """deployment -> (last request, pending wake request)."""
        rows = self._exec("SELECT deployment_id, last_request_at, wake_requested_at FROM deployment_activity")
        return {str(r[0]): (r[1], r[2]) for r in rows}

    def add_sla_event(self, deployment_id: str, event: dict[str, Any]) -> None:
        self._exec(
            "INSERT INTO sla_events (deployment_id, at, body) VALUES (?, ?, ?)",
            (deployment_id, float(event["at"]), json.dumps(event)),
        )

    def add_scaling_event(self, deployment_id: str, at: float, before: int, after: int, reason: str) -> None:
        self._exec(
            "INSERT INTO scaling_events (deployment_id, at, replicas_from, replicas_to, reason) "
            "VALUES (?, ?, ?, ?, ?)",
            (deployment_id, at, before, after, reason[:300]),
        )

    def scaling_counts(self) -> dict[tuple[str, str], int]:
        """(deployment, direction: up, down, zero or wake) -> decisions taken."""
        counts: dict[tuple[str, str], int] = {}
        for dep, before, after in self._exec(
            "SELECT deployment_id, replicas_from, replicas_to FROM scaling_events"
        ):
            direction = (
                "wake" if before == 0 else "zero" if after == 0 else "up" if after > before else "down"
            )
            counts[(dep, direction)] = counts.get((dep, direction), 0) + 1
        return counts

    def sla_state(self) -> tuple[dict[str, int], set[tuple[str, str]]]:
        """Breaches recorded per deployment, and the (deployment, metric) pairs breached now (their last event
        is a breach)."""
        counts: dict[str, int] = {}
        last: dict[tuple[str, str], str] = {}
        for dep, body in self._exec("SELECT deployment_id, body FROM sla_events ORDER BY at"):
            event = json.loads(body)
            if event.get("event") == "breach":
                counts[dep] = counts.get(dep, 0) + 1
            last[(dep, str(event.get("metric")))] = str(event.get("event"))
        return counts, {k for k, v in last.items() if v == "breach"}

    def sla_events(self, deployment_id: str, limit: int = 500) -> list[dict[str, Any]]:
        """A deployment's SLA breaches and recoveries, oldest first (the last ``limit``)."""
        rows = self._exec(
            "SELECT body FROM sla_events WHERE deployment_id = ? ORDER BY at DESC LIMIT ?",
            (deployment_id, limit),
        )
        return [json.loads(r[0]) for r in reversed(rows)]

    def report_load(self, process: str, in_flight: dict[str, int], now: float) -> None:
        """One data-plane process's in-flight requests per deployment, as of now (replaced in one transaction:
        the autoscaler never reads this process's load as zero in between)."""

        def replace(execute: Any) -> bool:
            execute("DELETE FROM plane_load WHERE process = ?", (process,))
            for dep, n in in_flight.items():
                execute(
                    "INSERT INTO plane_load (process, deployment_id, in_flight, at) VALUES (?, ?, ?, ?)",
                    (process, dep, n, now),
                )
            return True

        self._atomic(replace)

    def in_flight(self, fresh_after: float) -> dict[str, int]:
        """In-flight requests per deployment, summed over data planes that reported after ``fresh_after``."""
        rows = self._exec(
            "SELECT deployment_id, SUM(in_flight) FROM plane_load WHERE at > ? GROUP BY deployment_id",
            (fresh_after,),
        )
        return {str(r[0]): int(r[1]) for r in rows}

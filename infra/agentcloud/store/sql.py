"""The store's SQL plumbing: one connection (SQLite file or PostgreSQL URL), the schema, and placeholders.

SQLite by default (one file, no server), PostgreSQL when several gateway processes share state. Both run the
same SQL; only the placeholder differs. Calls are synchronous and short: callers on an event loop run them in
a thread."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from agentcloud.errors import InfraError

log = logging.getLogger("agentcloud.store")


class StoreError(InfraError):
    """A store call refused its input (an unknown org, a duplicate, a bad kind)."""


class StoreUnavailable(InfraError):
    """The database cannot be reached (PostgreSQL down or restarting, SQLite locked for too long): callers
    answer 503 with Retry-After; the next call reconnects."""


SCHEMA = [
    """CREATE TABLE IF NOT EXISTS orgs (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES orgs(id), name TEXT NOT NULL,
        prefix TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, plan TEXT NOT NULL, kind TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION, expires_at DOUBLE PRECISION,
        requests_per_minute INTEGER, tokens_per_minute INTEGER)""",
    """CREATE TABLE IF NOT EXISTS org_members (
        org_id TEXT NOT NULL REFERENCES orgs(id), key_id TEXT NOT NULL REFERENCES api_keys(id),
        permissions TEXT NOT NULL, PRIMARY KEY (org_id, key_id))""",
    """CREATE TABLE IF NOT EXISTS deployments (
        id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES orgs(id), name TEXT NOT NULL,
        model_id TEXT NOT NULL, status TEXT NOT NULL, spec TEXT NOT NULL, routes TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS grants (
        deployment_id TEXT NOT NULL, key_id TEXT NOT NULL REFERENCES api_keys(id), role TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (deployment_id, key_id))""",
    # Per-minute rollups, not one row per request: a minute may have several rows (one per flush).
    """CREATE TABLE IF NOT EXISTS usage (
        minute DOUBLE PRECISION NOT NULL, key_id TEXT NOT NULL, org_id TEXT NOT NULL, model_id TEXT NOT NULL,
        deployment_id TEXT, requests BIGINT NOT NULL, errors BIGINT NOT NULL, prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL, cost_usd DOUBLE PRECISION NOT NULL,
        latency_ms_sum DOUBLE PRECISION NOT NULL, latency_hist TEXT)""",
    "CREATE INDEX IF NOT EXISTS usage_org_minute ON usage (org_id, minute)",
    # Usage-journal segments already in `usage` (a segment is applied once, in the same transaction).
    """CREATE TABLE IF NOT EXISTS usage_segments (
        name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)""",
    # This store's identity (journal segments name the store they belong to).
    """CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS uploads (
        id TEXT PRIMARY KEY, org_id TEXT NOT NULL, key_id TEXT NOT NULL, name TEXT NOT NULL,
        deployment_id TEXT NOT NULL, status TEXT NOT NULL, size BIGINT, received BIGINT NOT NULL,
        sha256 TEXT, reason TEXT, info TEXT, created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS webhooks (
        id TEXT PRIMARY KEY, org_id TEXT NOT NULL, deployment_id TEXT NOT NULL, url TEXT NOT NULL,
        events TEXT NOT NULL, secret TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS webhook_outbox (
        id TEXT PRIMARY KEY, webhook_id TEXT NOT NULL, event_id TEXT NOT NULL, body TEXT NOT NULL,
        attempts INTEGER NOT NULL, next_attempt_at DOUBLE PRECISION NOT NULL, delivered_at DOUBLE PRECISION,
        dead BOOLEAN NOT NULL, last_error TEXT, created_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS outbox_due ON webhook_outbox (delivered_at, dead, next_attempt_at)",
    """CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS revisions (topic TEXT PRIMARY KEY, rev BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY, stack TEXT NOT NULL, operation TEXT NOT NULL, status TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION, error TEXT, log TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS jobs_stack ON jobs (stack, started_at)",
    # What the data plane observes, for the control plane (autoscaler, SLA): per-request samples of
    # deployments, the last and any wake request per deployment, each data-plane process's in-flight counts.
    """CREATE TABLE IF NOT EXISTS deployment_samples (
        deployment_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, ttft_ms DOUBLE PRECISION,
        tokens_per_s DOUBLE PRECISION, concurrency INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS samples_at ON deployment_samples (deployment_id, at)",
    """CREATE TABLE IF NOT EXISTS deployment_activity (
        deployment_id TEXT PRIMARY KEY, last_request_at DOUBLE PRECISION,
        wake_requested_at DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS sla_events (
        deployment_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sla_events_at ON sla_events (deployment_id, at)",
    # The autoscaler's decisions (and wakes), for metrics and history.
    """CREATE TABLE IF NOT EXISTS scaling_events (
        deployment_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, replicas_from INTEGER NOT NULL,
        replicas_to INTEGER NOT NULL, reason TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS plane_load (
        process TEXT NOT NULL, deployment_id TEXT NOT NULL, in_flight INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL, PRIMARY KEY (process, deployment_id))""",
]


def _duplicate(exc: Exception) -> bool:
    if isinstance(exc, sqlite3.IntegrityError):
        return "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc)
    try:
        import psycopg.errors
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.errors.UniqueViolation)


def _unavailable(exc: Exception) -> bool:
    """A failure of the connection, not of the statement."""
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "unable to open" in str(exc) or "disk I/O" in str(exc)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


# Columns added after a table was first released: (table, column, type), added to older stores at start.
COLUMNS_ADDED = [("usage", "latency_hist", "TEXT")]


TABLES = (
    "scaling_events",
    "plane_load",
    "sla_events",
    "deployment_activity",
    "deployment_samples",
    "jobs",
    "revisions",
    "leases",
    "webhook_outbox",
    "webhooks",
    "uploads",
    "usage",
    "usage_segments",
    "grants",
    "org_members",
    "deployments",
    "api_keys",
    "orgs",
)


class Database:
    """One connection guarded by a lock: the gateway's own calls are few (cache misses, batched writes)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        if url.startswith(("postgres://", "postgresql://")):
            import psycopg

            self._pg = True
            self._conn: Any = psycopg.connect(url, autocommit=True, connect_timeout=5)
        else:
            path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._pg = False
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
        for statement in SCHEMA:
            self._exec(statement)
        for table, column, kind in COLUMNS_ADDED:  # stores made by an earlier version
            try:
                self._exec(f"SELECT {column} FROM {table} LIMIT 0")
            except Exception:
                self._exec(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    # -- plumbing ---------------------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pg else sql

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._reachable():
            cur = self._conn.execute(self._sql(sql), tuple(params))
            rows = cur.fetchall() if cur.description else []
            return [tuple(r) for r in rows]

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """Around one database call (under the lock): a lost PostgreSQL connection is made again first; a
        database that cannot be reached raises StoreUnavailable (its details are logged, not shown)."""
        if self._pg and self._conn.closed:
            import psycopg

            try:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
            except psycopg.OperationalError as exc:
                log.warning("store unreachable: %s", exc)
                raise StoreUnavailable("the database cannot be reached") from None
        try:
            yield
        except Exception as exc:
            if _duplicate(exc):  # a race past the caller's own check: still a finished message
                raise StoreError("that record already exists (a duplicate id or name)") from None
            if not _unavailable(exc):
                raise
            log.warning("store call failed: %s", exc)
            if self._pg:
                with contextlib.suppress(Exception):
                    self._conn.close()  # reconnect at the next call
            raise StoreUnavailable("the database cannot be reached") from None

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._lock, self._reachable():
            if self._pg:
                with self._conn.cursor() as cur:
                    cur.executemany(self._sql(sql), [tuple(r) for r in rows])
            else:
                self._conn.execute("BEGIN")
                try:
                    self._conn.executemany(sql, [tuple(r) for r in rows])
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise

    def _atomic(self, body: Callable[[Callable[[str, Sequence[Any]], int]], bool]) -> bool:
        """Run ``body(execute)`` in one transaction (``execute`` returns the rows a statement changed); the
        transaction commits when ``body`` returns True, else rolls back."""
        with self._lock, self._reachable():
            if self._pg:
                import psycopg

                done = False
                with self._conn.transaction() as tx, self._conn.cursor() as cur:

                    def pg(sql: str, params: Sequence[Any]) -> int:
                        cur.execute(self._sql(sql), tuple(params))
                        return int(cur.rowcount)

                    done = body(pg)
                    if not done:
                        raise psycopg.Rollback(tx)  # swallowed by the transaction block
                return done

            def lite(sql: str, params: Sequence[Any]) -> int:
                return int(self._conn.execute(sql, tuple(params)).rowcount)

            self._conn.execute("BEGIN")
            try:
                done = body(lite)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT" if done else "ROLLBACK")
            return done

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def reset(self) -> None:
        """Delete every row (tests)."""
        for table in TABLES:
            self._exec(f"DELETE FROM {table}")

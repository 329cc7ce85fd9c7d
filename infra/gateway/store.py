"""Gateway storage: orgs, API keys, org members, deployments, grants, usage and (for lifecycle) jobs.

SQLite by default (one file, no server), PostgreSQL when several gateway replicas share state. Both run the same
SQL through a tiny adapter (placeholders differ). Calls are synchronous and short; the gateway runs them in a
thread on a cache miss, and writes usage in batches off the request path.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.gateway import keys as keymod
from infra.gateway.keys import KeyRecord

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
    # Per-minute rollups, not one row per request: a minute may have several rows (one per flush); sums are exact.
    """CREATE TABLE IF NOT EXISTS usage (
        minute DOUBLE PRECISION NOT NULL, key_id TEXT NOT NULL, org_id TEXT NOT NULL, model_id TEXT NOT NULL,
        deployment_id TEXT, requests BIGINT NOT NULL, errors BIGINT NOT NULL, prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL, cost_usd DOUBLE PRECISION NOT NULL, latency_ms_sum DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS usage_org_minute ON usage (org_id, minute)",
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
]


class StoreError(Exception):
    pass


@dataclass(frozen=True)
class UsageRow:
    """Usage of one key on one model (and deployment) within one minute."""

    minute: float
    key_id: str
    org_id: str
    model_id: str
    deployment_id: str | None
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms_sum: float


class Store:
    """One connection guarded by a lock: the gateway's own calls are few (cache misses, batched writes)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        if url.startswith(("postgres://", "postgresql://")):
            import psycopg

            self._pg = True
            self._conn: Any = psycopg.connect(url, autocommit=True)
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

    # -- plumbing ---------------------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pg else sql

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            cur = self._conn.execute(self._sql(sql), tuple(params))
            rows = cur.fetchall() if cur.description else []
            return [tuple(r) for r in rows]

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._lock:
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

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def reset(self) -> None:
        """Delete every row (tests)."""
        for table in (
            "leases",
            "webhook_outbox",
            "webhooks",
            "uploads",
            "usage",
            "grants",
            "org_members",
            "deployments",
            "api_keys",
            "orgs",
        ):
            self._exec(f"DELETE FROM {table}")

    # -- orgs and keys ---------------------------------------------------------------------------------
    def create_org(self, name: str, org_id: str | None = None) -> str:
        org_id = org_id or keymod.new_id("org")
        self._exec("INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)", (org_id, name, time.time()))
        return org_id

    def org_exists(self, org_id: str) -> bool:
        return bool(self._exec("SELECT 1 FROM orgs WHERE id = ?", (org_id,)))

    def create_key(
        self,
        pepper: bytes,
        org_id: str,
        name: str,
        plan: str,
        kind: str = "standard",
        expires_at: float | None = None,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> tuple[str, str]:
        """Returns (key id, the key itself): the only time the key is seen in clear."""
        if kind not in keymod.KINDS:
            raise StoreError(f"unknown key kind {kind!r}; use one of {', '.join(keymod.KINDS)}")
        if not self.org_exists(org_id):
            raise StoreError(f"no org {org_id!r}")
        token = keymod.generate()
        key_id = keymod.new_id("key")
        self._exec(
            "INSERT INTO api_keys (id, org_id, name, prefix, hash, plan, kind, created_at, expires_at, "
            "requests_per_minute, tokens_per_minute) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key_id, org_id, name, keymod.display_prefix(token), keymod.digest(pepper, token), plan, kind,
                time.time(), expires_at, requests_per_minute, tokens_per_minute,
            ),
        )  # fmt: skip
        return key_id, token

    def revoke_key(self, key_id: str) -> bool:
        found = self._exec("SELECT revoked_at FROM api_keys WHERE id = ?", (key_id,))
        if not found:
            return False
        self._exec(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id)
        )
        return True

    def key_by_hash(self, digest: str) -> KeyRecord | None:
        rows = self._exec(
            "SELECT id, org_id, name, prefix, plan, kind, created_at, revoked_at, expires_at, "
            "requests_per_minute, tokens_per_minute FROM api_keys WHERE hash = ?",
            (digest,),
        )
        return self._record(rows[0]) if rows else None

    def key_by_id(self, key_id: str) -> KeyRecord | None:
        rows = self._exec(
            "SELECT id, org_id, name, prefix, plan, kind, created_at, revoked_at, expires_at, "
            "requests_per_minute, tokens_per_minute FROM api_keys WHERE id = ?",
            (key_id,),
        )
        return self._record(rows[0]) if rows else None

    def _record(self, row: tuple[Any, ...]) -> KeyRecord:
        key_id = row[0]
        grants = frozenset(
            r[0] for r in self._exec("SELECT deployment_id FROM grants WHERE key_id = ?", (key_id,))
        )
        members = tuple(
            (r[0], frozenset(p for p in r[1].split(",") if p))
            for r in self._exec("SELECT org_id, permissions FROM org_members WHERE key_id = ?", (key_id,))
        )
        (kid, org, name, prefix, plan, kind, created, revoked, expires, rpm, tpm) = row
        return KeyRecord(
            id=kid, org_id=org, name=name, prefix=prefix, plan=plan, kind=kind, created_at=created, revoked_at=revoked,
            expires_at=expires, requests_per_minute=rpm, tokens_per_minute=tpm, grants=grants, memberships=members,
        )  # fmt: skip

    def list_keys(self, org_id: str | None = None) -> list[KeyRecord]:
        sql = "SELECT id FROM api_keys" + (" WHERE org_id = ?" if org_id else "") + " ORDER BY created_at"
        ids = [r[0] for r in self._exec(sql, (org_id,) if org_id else ())]
        return [rec for rec in (self.key_by_id(i) for i in ids) if rec is not None]

    def add_member(self, org_id: str, key_id: str, permissions: Iterable[str]) -> None:
        perms = ",".join(sorted(set(permissions)))
        self._exec("DELETE FROM org_members WHERE org_id = ? AND key_id = ?", (org_id, key_id))
        self._exec(
            "INSERT INTO org_members (org_id, key_id, permissions) VALUES (?, ?, ?)", (org_id, key_id, perms)
        )

    def remove_member(self, org_id: str, key_id: str) -> None:
        self._exec("DELETE FROM org_members WHERE org_id = ? AND key_id = ?", (org_id, key_id))

    # -- grants ----------------------------------------------------------------------------------------
    def grant(self, deployment_id: str, key_id: str, role: str = "inference") -> None:
        self._exec(
            "INSERT INTO grants (deployment_id, key_id, role, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (deployment_id, key_id) DO NOTHING",
            (deployment_id, key_id, role, time.time()),
        )

    def revoke_grant(self, deployment_id: str, key_id: str) -> bool:
        had = bool(
            self._exec("SELECT 1 FROM grants WHERE deployment_id = ? AND key_id = ?", (deployment_id, key_id))
        )
        self._exec("DELETE FROM grants WHERE deployment_id = ? AND key_id = ?", (deployment_id, key_id))
        return had

    # -- deployments -----------------------------------------------------------------------------------
    def upsert_deployment(
        self,
        dep_id: str,
        org_id: str,
        name: str,
        model_id: str,
        status: str,
        spec: dict[str, Any],
        routes: dict[str, Any],
    ) -> None:
        now = time.time()
        self._exec("DELETE FROM deployments WHERE id = ?", (dep_id,))
        self._exec(
            "INSERT INTO deployments (id, org_id, name, model_id, status, spec, routes, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (dep_id, org_id, name, model_id, status, json.dumps(spec), json.dumps(routes), now, now),
        )

    def deployments(self) -> list[dict[str, Any]]:
        rows = self._exec(
            "SELECT id, org_id, name, model_id, status, spec, routes FROM deployments ORDER BY created_at"
        )
        return [
            {"id": r[0], "org_id": r[1], "name": r[2], "model_id": r[3], "status": r[4], "spec": json.loads(r[5]),
             "routes": json.loads(r[6])}
            for r in rows
        ]  # fmt: skip

    # -- model uploads -----------------------------------------------------------------------------------
    UPLOAD_FIELDS = ("id", "org_id", "key_id", "name", "deployment_id", "status", "size", "received", "sha256",
                     "reason", "info", "created_at", "updated_at")  # fmt: skip

    def create_upload(self, upload_id: str, org_id: str, key_id: str, name: str, deployment_id: str,
                      size: int | None) -> None:  # fmt: skip
        now = time.time()
        self._exec(
            "INSERT INTO uploads (id, org_id, key_id, name, deployment_id, status, size, received, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, 'pending_upload', ?, 0, ?, ?)",
            (upload_id, org_id, key_id, name, deployment_id, size, now, now),
        )

    def update_upload(self, upload_id: str, **fields: Any) -> None:
        if "info" in fields and fields["info"] is not None:
            fields["info"] = json.dumps(fields["info"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._exec(
            f"UPDATE uploads SET {sets}, updated_at = ? WHERE id = ?",
            (*fields.values(), time.time(), upload_id),
        )

    def upload(self, upload_id: str) -> dict[str, Any] | None:
        rows = self._exec(f"SELECT {', '.join(self.UPLOAD_FIELDS)} FROM uploads WHERE id = ?", (upload_id,))
        if not rows:
            return None
        record = dict(zip(self.UPLOAD_FIELDS, rows[0], strict=True))
        record["info"] = json.loads(record["info"]) if record["info"] else None
        return record

    def upload_named(self, org_id: str, name: str) -> dict[str, Any] | None:
        rows = self._exec(
            "SELECT id FROM uploads WHERE org_id = ? AND name = ? AND status != 'failed'", (org_id, name)
        )
        return self.upload(rows[0][0]) if rows else None

    # -- webhooks and their outbox ----------------------------------------------------------------------
    def create_webhook(
        self, hook_id: str, org_id: str, deployment_id: str, url: str, events: list[str], sealed_secret: str
    ) -> None:
        self._exec(
            "INSERT INTO webhooks (id, org_id, deployment_id, url, events, secret, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (hook_id, org_id, deployment_id, url, json.dumps(events), sealed_secret, time.time()),
        )

    def webhooks_for(self, deployment_id: str, event: str) -> list[tuple[str, str, str]]:
        rows = self._exec(
            "SELECT id, url, events, secret FROM webhooks WHERE deployment_id = ?", (deployment_id,)
        )
        return [(r[0], r[1], r[3]) for r in rows if event in json.loads(r[2])]

    def webhook(self, hook_id: str) -> tuple[str, str] | None:
        rows = self._exec("SELECT url, secret FROM webhooks WHERE id = ?", (hook_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def enqueue(self, rows: Sequence[tuple[str, str, str, str]], now: float) -> None:
        """(outbox id, webhook id, event id, body) rows, due now."""
        self._many(
            "INSERT INTO webhook_outbox (id, webhook_id, event_id, body, attempts, next_attempt_at, dead, created_at) "
            "VALUES (?, ?, ?, ?, 0, ?, FALSE, ?)",
            [(*r, now, now) for r in rows],
        )

    def due(self, now: float, limit: int = 100) -> list[tuple[str, str, str, str, int, float]]:
        return [
            (r[0], r[1], r[2], r[3], int(r[4]), float(r[5]))
            for r in self._exec(
                "SELECT id, webhook_id, event_id, body, attempts, created_at FROM webhook_outbox "
                "WHERE delivered_at IS NULL AND dead = FALSE AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
                (now, limit),
            )
        ]

    def delivered(self, outbox_id: str, now: float) -> None:
        self._exec(
            "UPDATE webhook_outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
            (now, outbox_id),
        )

    def retry_later(self, outbox_id: str, next_at: float, error: str, dead: bool) -> None:
        self._exec(
            "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, dead = ? WHERE id = ?",
            (next_at, error[:500], dead, outbox_id),
        )

    def outbox(self) -> list[dict[str, Any]]:
        rows = self._exec("SELECT id, event_id, attempts, delivered_at, dead, last_error FROM webhook_outbox")
        return [
            dict(zip(("id", "event_id", "attempts", "delivered_at", "dead", "last_error"), r, strict=True))
            for r in rows
        ]

    # -- leases (one replica runs the webhook sender and the autoscaler) -----------------------------------
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

    # -- usage -----------------------------------------------------------------------------------------
    def add_usage(self, rows: Sequence[UsageRow]) -> None:
        if rows:
            self._many(
                "INSERT INTO usage (minute, key_id, org_id, model_id, deployment_id, requests, errors, prompt_tokens, "
                "completion_tokens, cost_usd, latency_ms_sum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.minute, r.key_id, r.org_id, r.model_id, r.deployment_id, r.requests, r.errors, r.prompt_tokens,
                     r.completion_tokens, r.cost_usd, r.latency_ms_sum)
                    for r in rows
                ],
            )  # fmt: skip

    def usage_totals(self, org_id: str, since: float = 0.0) -> dict[str, dict[str, float]]:
        rows = self._exec(
            "SELECT model_id, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd), SUM(errors) "
            "FROM usage WHERE org_id = ? AND minute >= ? GROUP BY model_id",
            (org_id, since),
        )
        return {
            r[0]: {"requests": int(r[1]), "prompt_tokens": int(r[2] or 0), "completion_tokens": int(r[3] or 0),
                   "cost_usd": float(r[4] or 0), "errors": int(r[5] or 0)}
            for r in rows
        }  # fmt: skip

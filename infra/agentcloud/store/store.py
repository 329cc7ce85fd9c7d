"""The store: orgs, API keys, members, grants, deployments, uploads, webhooks and usage.

The one place both planes share state (see docs/architecture.md): the data plane reads keys and routes and
writes usage and what it observes; the control plane writes deployments and reads the rest. Every table's
owner is written in docs/architecture.md."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import agentcloud.store.keys as keymod
from agentcloud.records import DeploymentRecord
from agentcloud.store.coordination import Coordination
from agentcloud.store.keys import KeyRecord
from agentcloud.store.sql import StoreError


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
    latency_hist: tuple[int, ...] = ()  # counts per LATENCY_BOUNDS_MS bucket (and one above the last)


# The stored latency histogram's buckets: 1 ms .. ~10 min, x1.25 each (percentiles over any window, from the
# store alone, within ~12%).
LATENCY_BOUNDS_MS = tuple(1.0 * 1.25**i for i in range(61))


class Store(Coordination):
    """Every domain table; calls are synchronous and short (run them off the event loop)."""

    # -- orgs and keys ---------------------------------------------------------------------------------
    def create_org(self, name: str, org_id: str | None = None) -> str:
        org_id = org_id or keymod.new_id("org")
        if self.org_exists(org_id):
            raise StoreError(f"org {org_id!r} already exists; choose another --id (or omit it for a new one)")
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
                key_id,
                org_id,
                name,
                keymod.display_prefix(token),
                keymod.digest(pepper, token),
                plan,
                kind,
                time.time(),
                expires_at,
                requests_per_minute,
                tokens_per_minute,
            ),
        )
        return key_id, token

    def revoke_key(self, key_id: str) -> bool:
        found = self._exec("SELECT revoked_at FROM api_keys WHERE id = ?", (key_id,))
        if not found:
            return False
        self._exec(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id)
        )
        self.bump("keys")
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
            id=kid,
            org_id=org,
            name=name,
            prefix=prefix,
            plan=plan,
            kind=kind,
            created_at=created,
            revoked_at=revoked,
            expires_at=expires,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            grants=grants,
            memberships=members,
        )

    def list_keys(self, org_id: str | None = None) -> list[KeyRecord]:
        sql = "SELECT id FROM api_keys" + (" WHERE org_id = ?" if org_id else "") + " ORDER BY created_at"
        ids = [r[0] for r in self._exec(sql, (org_id,) if org_id else ())]
        return [rec for rec in (self.key_by_id(i) for i in ids) if rec is not None]

    def add_member(self, org_id: str, key_id: str, permissions: Iterable[str]) -> None:
        perms = ",".join(sorted(set(permissions)))
        self._exec(
            "INSERT INTO org_members (org_id, key_id, permissions) VALUES (?, ?, ?) "
            "ON CONFLICT (org_id, key_id) DO UPDATE SET permissions = excluded.permissions",
            (org_id, key_id, perms),
        )
        self.bump("keys")

    def remove_member(self, org_id: str, key_id: str) -> None:
        self._exec("DELETE FROM org_members WHERE org_id = ? AND key_id = ?", (org_id, key_id))
        self.bump("keys")

    # -- grants ----------------------------------------------------------------------------------------
    def grant(self, deployment_id: str, key_id: str, role: str = "inference") -> None:
        self._exec(
            "INSERT INTO grants (deployment_id, key_id, role, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (deployment_id, key_id) DO NOTHING",
            (deployment_id, key_id, role, time.time()),
        )
        self.bump("keys")

    def revoke_grant(self, deployment_id: str, key_id: str) -> bool:
        had = bool(
            self._exec("SELECT 1 FROM grants WHERE deployment_id = ? AND key_id = ?", (deployment_id, key_id))
        )
        self._exec("DELETE FROM grants WHERE deployment_id = ? AND key_id = ?", (deployment_id, key_id))
        self.bump("keys")
        return had

    # -- deployments (owned by the control plane; `routes add` registers hand-run ones) ----------------------
    def save_deployment(self, record: DeploymentRecord) -> None:
        """Insert or replace a deployment in one statement (a reader never sees it missing), and bump the
        "routes" revision data planes watch."""
        meta, routes = record.encode()
        now = time.time()
        self._exec(
            "INSERT INTO deployments (id, org_id, name, model_id, status, spec, routes, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "org_id = excluded.org_id, name = excluded.name, model_id = excluded.model_id, "
            "status = excluded.status, spec = excluded.spec, routes = excluded.routes, "
            "updated_at = excluded.updated_at",
            (
                record.id,
                record.org_id,
                record.name,
                record.model_id,
                record.status.value,
                json.dumps(meta),
                json.dumps(routes),
                now,
                now,
            ),
        )
        self.bump("routes")

    def delete_deployment(self, dep_id: str) -> bool:
        """Forget a deployment (one registered by hand: the API's own end inactive, with their history)."""
        found = bool(self._exec("SELECT 1 FROM deployments WHERE id = ?", (dep_id,)))
        self._exec("DELETE FROM deployments WHERE id = ?", (dep_id,))
        self.bump("routes")
        return found

    def deployments(self) -> list[DeploymentRecord]:
        rows = self._exec(
            "SELECT id, org_id, name, model_id, status, spec, routes FROM deployments ORDER BY created_at"
        )
        return [self._deployment(r) for r in rows]

    def deployment(self, dep_id: str) -> DeploymentRecord | None:
        rows = self._exec(
            "SELECT id, org_id, name, model_id, status, spec, routes FROM deployments WHERE id = ?", (dep_id,)
        )
        return self._deployment(rows[0]) if rows else None

    @staticmethod
    def _deployment(row: tuple[Any, ...]) -> DeploymentRecord:
        dep_id, org_id, name, model_id, status, meta, routes = row
        return DeploymentRecord.decode(
            dep_id, org_id, name, model_id, status, json.loads(meta), json.loads(routes)
        )

    # -- model uploads -----------------------------------------------------------------------------------
    UPLOAD_FIELDS = (
        "id",
        "org_id",
        "key_id",
        "name",
        "deployment_id",
        "status",
        "size",
        "received",
        "sha256",
        "reason",
        "info",
        "created_at",
        "updated_at",
    )

    def create_upload(
        self, upload_id: str, org_id: str, key_id: str, name: str, deployment_id: str, size: int | None
    ) -> None:
        now = time.time()
        self._exec(
            "INSERT INTO uploads (id, org_id, key_id, name, deployment_id, status, size, received, "
            "created_at, "
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

    def ready_upload(self, deployment_id: str) -> dict[str, Any] | None:
        """The model a deployment serves: its most recently delivered upload."""
        rows = self._exec(
            "SELECT id FROM uploads WHERE deployment_id = ? AND status = 'ready' ORDER BY updated_at DESC "
            "LIMIT 1",
            (deployment_id,),
        )
        return self.upload(rows[0][0]) if rows else None

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
            "INSERT INTO webhooks (id, org_id, deployment_id, url, events, secret, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            "INSERT INTO webhook_outbox (id, webhook_id, event_id, body, attempts, next_attempt_at, dead, "
            "created_at) "
            "VALUES (?, ?, ?, ?, 0, ?, FALSE, ?)",
            [(*r, now, now) for r in rows],
        )

    def due(self, now: float, limit: int = 100) -> list[tuple[str, str, str, str, int, float]]:
        return [
            (r[0], r[1], r[2], r[3], int(r[4]), float(r[5]))
            for r in self._exec(
                "SELECT id, webhook_id, event_id, body, attempts, created_at FROM webhook_outbox "
                "WHERE delivered_at IS NULL AND dead = FALSE AND next_attempt_at <= ? "
                "ORDER BY next_attempt_at LIMIT ?",
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
            "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, dead "
            "= ? "
            "WHERE id = ?",
            (next_at, error[:500], dead, outbox_id),
        )

    def outbox(self) -> list[dict[str, Any]]:
        rows = self._exec("SELECT id, event_id, attempts, delivered_at, dead, last_error FROM webhook_outbox")
        return [
            dict(zip(("id", "event_id", "attempts", "delivered_at", "dead", "last_error"), r, strict=True))
            for r in rows
        ]

    # -- usage -----------------------------------------------------------------------------------------
    _USAGE_INSERT = (
        "INSERT INTO usage (minute, key_id, org_id, model_id, deployment_id, requests, errors, "
        "prompt_tokens, completion_tokens, cost_usd, latency_ms_sum, latency_hist) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    def add_usage(self, rows: Sequence[UsageRow], segment: str | None = None) -> bool:
        """Add usage rollups; with ``segment`` (a usage-journal file), only once per segment name, in one
        transaction: False when that segment was applied before."""

        def write(execute: Any) -> bool:
            if segment is not None and not execute(
                "INSERT INTO usage_segments (name, applied_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (segment, time.time()),
            ):
                return False
            for r in rows:
                execute(self._USAGE_INSERT, _usage_params(r))
            return True

        return self._atomic(write)

    def store_id(self) -> str:
        """This store's identity, made on first use (usage-journal segments carry it)."""
        self._exec(
            "INSERT INTO meta (name, value) VALUES ('store_id', ?) ON CONFLICT (name) DO NOTHING",
            (keymod.new_id("store"),),
        )
        return str(self._exec("SELECT value FROM meta WHERE name = 'store_id'")[0][0])

    def outbox_backlog(self) -> tuple[int, float | None]:
        """Webhook deliveries not yet made (and not given up on): how many, and when the oldest was queued."""
        rows = self._exec(
            "SELECT COUNT(*), MIN(created_at) FROM webhook_outbox WHERE delivered_at IS NULL AND NOT dead"
        )
        count, oldest = rows[0]
        return int(count), float(oldest) if oldest is not None else None

    def usage_since(
        self, org_id: str | None, since: float, deployment_id: str | None = None
    ) -> list[UsageRow]:
        """Usage rows from ``since`` (seconds since the epoch) on: an org's, or a deployment's (every org's
        keys that called it)."""
        column, value = ("deployment_id", deployment_id) if deployment_id else ("org_id", org_id)
        rows = self._exec(
            "SELECT minute, key_id, org_id, model_id, deployment_id, requests, errors, prompt_tokens, "
            f"completion_tokens, cost_usd, latency_ms_sum, latency_hist FROM usage "
            f"WHERE {column} = ? AND minute >= ?",
            (value, since),
        )
        return [
            UsageRow(
                float(r[0]),
                str(r[1]),
                str(r[2]),
                str(r[3]),
                r[4],
                int(r[5]),
                int(r[6]),
                int(r[7]),
                int(r[8]),
                float(r[9]),
                float(r[10]),
                tuple(json.loads(r[11])) if r[11] else (),
            )
            for r in rows
        ]

    def usage_totals(self, org_id: str, since: float = 0.0) -> dict[str, dict[str, float]]:
        rows = self._exec(
            "SELECT model_id, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd), "
            "SUM(errors) "
            "FROM usage WHERE org_id = ? AND minute >= ? GROUP BY model_id",
            (org_id, since),
        )
        return {
            r[0]: {
                "requests": int(r[1]),
                "prompt_tokens": int(r[2] or 0),
                "completion_tokens": int(r[3] or 0),
                "cost_usd": float(r[4] or 0),
                "errors": int(r[5] or 0),
            }
            for r in rows
        }


def _usage_params(r: UsageRow) -> tuple[Any, ...]:
    return (
        r.minute,
        r.key_id,
        r.org_id,
        r.model_id,
        r.deployment_id,
        r.requests,
        r.errors,
        r.prompt_tokens,
        r.completion_tokens,
        r.cost_usd,
        r.latency_ms_sum,
        json.dumps(list(r.latency_hist)) if r.latency_hist else None,
    )

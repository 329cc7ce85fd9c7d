"""The same storage tests against SQLite (default) and a real PostgreSQL started by the tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcloud.records import DeploymentRecord, Status
from agentcloud.store import Store, StoreError, UsageRow
from agentcloud.store import keys as keymod

PEPPER = b"pepper"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(str(tmp_path / "gw.sqlite3"))
        yield s
        s.close()
    else:
        s = Store(request.getfixturevalue("pg_url"))
        s.reset()
        yield s
        s.close()


def test_keys_roundtrip_and_revocation(store: Store) -> None:
    org = store.create_org("acme")
    key_id, token = store.create_key(PEPPER, org, "ci", "basic", "scoped", requests_per_minute=5)
    assert keymod.well_formed(token)
    rec = store.key_by_hash(keymod.digest(PEPPER, token))
    assert rec is not None and rec.id == key_id and rec.plan == "basic" and rec.kind == "scoped"
    assert rec.requests_per_minute == 5 and rec.active()
    assert store.key_by_hash(keymod.digest(b"other pepper", token)) is None
    assert store.revoke_key(key_id) and not store.key_by_id(key_id).active()  # type: ignore[union-attr]
    assert not store.revoke_key("key_nope")


def test_grants_and_members(store: Store) -> None:
    org_a, org_b = store.create_org("a"), store.create_org("b")
    key_id, _ = store.create_key(PEPPER, org_b, "k", "free")
    store.grant("dep_1", key_id)
    store.grant("dep_1", key_id)  # idempotent
    store.add_member(org_a, key_id, ["deployment:invoke", "deployment:read"])
    rec = store.key_by_id(key_id)
    assert rec is not None and rec.grants == {"dep_1"}
    assert rec.org_permissions(org_a) == {"deployment:invoke", "deployment:read"}
    assert rec.org_permissions(org_b) == {"deployment:invoke", "model:invoke"}
    assert store.revoke_grant("dep_1", key_id) and not store.revoke_grant("dep_1", key_id)


def test_usage_batches_and_totals(store: Store) -> None:
    org = store.create_org("acme")
    now = time.time()
    rows = [UsageRow(now, "key_1", org, "m1", None, 2, 0, 10, 5, 0.001, 25.0) for _ in range(250)]
    rows.append(UsageRow(now, "key_1", org, "m1", "dep_1", 1, 1, 1, 0, 0.0, 3.0))
    store.add_usage(rows)
    totals = store.usage_totals(org)
    assert totals["m1"]["requests"] == 501 and totals["m1"]["prompt_tokens"] == 2501
    assert totals["m1"]["errors"] == 1 and totals["m1"]["cost_usd"] == pytest.approx(0.25)


def test_deployments(store: Store) -> None:
    org = store.create_org("acme")
    model = "llama-3.1-8b-instruct"
    store.save_deployment(
        DeploymentRecord(
            "dep_1",
            org,
            "prod",
            model,
            Status.ACTIVE,
            spec={"replicas": 1},
            routes={"endpoints": ["http://10.0.0.5:8000/v1"]},
        )
    )
    before = store.revisions().get("routes", 0)
    store.save_deployment(DeploymentRecord("dep_1", org, "prod", model, Status.SCALING, spec={"replicas": 2}))
    (dep,) = store.deployments()
    assert dep.status is Status.SCALING and dep.spec == {"replicas": 2}
    assert store.revisions()["routes"] == before + 1  # data planes learn of the change from this


def test_bad_input(store: Store) -> None:
    with pytest.raises(StoreError, match="no org"):
        store.create_key(PEPPER, "org_missing", "k", "free")
    org = store.create_org("acme")
    with pytest.raises(StoreError, match="unknown key kind"):
        store.create_key(PEPPER, org, "k", "free", "root")


def test_routes_from_stack_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog: object) -> None:
    """`agentcloud gateway routes-from-stack` turns a deployment stack's outputs into gateway routes."""
    from agentcloud import automation
    from agentcloud.cli import main
    from agentcloud.gateway.routing import deployment_from_record

    outputs = {
        "endpoints": [
            {"private_ip": "10.10.0.5", "public_ip": "198.51.100.5", "port": 8000, "droplet_id": "1"},
            {"private_ip": "10.10.0.6", "public_ip": "198.51.100.6", "port": 8000, "droplet_id": "2"},
        ],
        "plan": {"model_id": "llama-3.3-70b-instruct", "concurrency_limit": 50},
    }
    monkeypatch.setattr(automation, "outputs", lambda stack: outputs if stack == "prod-inference" else {})
    db = str(tmp_path / "gw.sqlite3")
    Store(db).create_org("acme", org_id="org_acme")
    assert (
        main(
            [
                "gateway",
                "--database",
                db,
                "routes-from-stack",
                "prod-inference",
                "--org",
                "org_acme",
                "--api-key-env",
                "PROD_KEY",
            ]
        )
        == 0
    )
    (record,) = Store(db).deployments()
    dep = deployment_from_record(record)
    assert (
        dep.id == "dep_prod_inference"
        and dep.model_id == "llama-3.3-70b-instruct"
        and dep.concurrency_limit == 50
    )
    assert [t.base_url for t in dep.targets] == ["http://10.10.0.5:8000/v1", "http://10.10.0.6:8000/v1"]
    assert main(["gateway", "--database", db, "routes-from-stack", "other", "--org", "org_acme"]) == 1

"""Webhooks: SSRF checks, the spec's verify(), at-least-once delivery from the outbox to a real receiver on
127.0.0.1 that fails at random, nothing lost across a gateway restart, and the sender's lease."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web

from agentcloud.catalog import Catalog
from agentcloud.control.errors import UnsafeURL
from agentcloud.control.webhooks import Policy, check_url, verify_delivery
from agentcloud.store import Store
from tests.gateway.harness import PEPPER, Keys, Running, make_gateway, routes_for, running, seed, wait_for
from tests.sshd import free_port

API = "/api/v1/public"


def verify(payload: bytes, signature: str, secret: str) -> bool:  # the reference product's own verify()
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", signature)


def _resolver(*addresses: str):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int, type: int = 0):  # type: ignore[no-untyped-def]
        fam = socket.AF_INET6 if ":" in addresses[0] else socket.AF_INET
        return [(fam, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    return resolve


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.1.1", "carrier-grade NAT"),
        ("64:ff9b::a00:1", "private"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "private|not a public"),
        ("2002:a00:1::1", "private"),
    ],
)
def test_ssrf_refused(address: str, why: str) -> None:
    with pytest.raises(UnsafeURL, match=why):
        check_url("https://hooks.example.com/x", Policy(), resolve=_resolver(address))


def test_ssrf_allowed_and_other_rules() -> None:
    assert (
        check_url("https://hooks.example.com/x", Policy(), resolve=_resolver("93.184.216.34"))[1]
        == "93.184.216.34"
    )
    assert (
        check_url("https://h.example.com/", Policy(), resolve=_resolver("2606:4700::1111"))[1]
        == "2606:4700::1111"
    )
    with pytest.raises(UnsafeURL, match="private"):  # every address must be safe
        check_url("https://h.example.com/", Policy(), resolve=_resolver("93.184.216.34", "10.0.0.1"))
    with pytest.raises(UnsafeURL, match="https"):
        check_url("http://h.example.com/", Policy(), resolve=_resolver("93.184.216.34"))
    with pytest.raises(UnsafeURL, match="credentials"):
        check_url("https://user:pw@h.example.com/", Policy(), resolve=_resolver("93.184.216.34"))
    assert check_url("http://127.0.0.1:9/", Policy(allow_http=True, allow_loopback=True))[1] == "127.0.0.1"


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers 500 (or drops the connection) at random."""

    def __init__(self, fail_rate: float, port: int | None = None) -> None:
        self.fail_rate = fail_rate
        self.port = port or free_port()
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.rng = random.Random(7)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        roll = self.rng.random()
        if roll < self.fail_rate / 2:
            return web.Response(status=500)
        if roll < self.fail_rate:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        self.received.append((body, dict(request.headers)))
        return web.Response(status=204)

    @contextmanager
    def serving(self) -> Iterator[Receiver]:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.run_until_complete(runner.cleanup())
            loop.close()


def _gateway(catalog: Catalog, store: Store, tmp: Path):  # type: ignore[no-untyped-def]
    return make_gateway(
        catalog,
        store,
        routes_for("http://127.0.0.1:9/v1"),
        tmp,
        webhooks_allow_http=True,
        webhooks_allow_loopback=True,
        webhook_backoff_s=0.05,
        webhook_tick_s=0.05,
    )


def _subscribe(url: str, gw_url: str, keys: Keys) -> str:
    resp = requests.post(
        f"{gw_url}{API}/deployments/dep_a/webhooks",
        headers={"Authorization": f"Bearer {keys.admin}"},
        json={"url": url, "events": ["deployment.sla_breach", "deployment.scaled"]},
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["secret"])


def test_every_event_delivered_and_verifies(
    tmp_path: Path, catalog: Catalog, store: Store, keys: Keys
) -> None:
    receiver = Receiver(fail_rate=0.4)
    with receiver.serving(), running(_gateway(catalog, store, tmp_path)) as r:
        secret = _subscribe(f"http://127.0.0.1:{receiver.port}/hook", r.url, keys)
        ids = []
        for i in range(25):
            ids += r.run(
                r.gateway.control.webhooks.emit(
                    "dep_a", "deployment.sla_breach", {"metric": "ttft_p95_ms", "n": i}
                )
            )
        assert wait_for(lambda: {h["X-AINative-Event-Id"] for _, h in receiver.received} >= set(ids), 30)
    for body, headers in receiver.received:
        assert verify(body, headers["X-AINative-Signature"], secret)
        payload = json.loads(body)
        assert payload["id"] == headers["X-AINative-Event-Id"] and payload["type"] == "deployment.sla_breach"
        assert abs(int(headers["X-AINative-Timestamp"]) - time.time()) < 120
    outbox = store.outbox()
    assert all(row["delivered_at"] for row in outbox) and max(row["attempts"] for row in outbox) > 1


def test_nothing_lost_across_a_restart(tmp_path: Path, catalog: Catalog) -> None:
    store = Store(str(tmp_path / "gw.sqlite3"))
    keys = seed(store)
    receiver = Receiver(fail_rate=0.0)
    with running(_gateway(catalog, store, tmp_path)) as r:  # the receiver is down: every attempt fails
        _subscribe(f"http://127.0.0.1:{receiver.port}/hook", r.url, keys)
        ids = []
        for i in range(10):
            ids += r.run(r.gateway.control.webhooks.emit("dep_a", "deployment.scaled", {"replicas": i}))
        assert wait_for(lambda: all(row["attempts"] >= 1 for row in store.outbox()), 10)
    assert not any(row["delivered_at"] for row in store.outbox())
    store.close()
    store = Store(str(tmp_path / "gw.sqlite3"))  # a new gateway process on the same store
    with receiver.serving(), running(_gateway(catalog, store, tmp_path)):
        assert wait_for(lambda: {h["X-AINative-Event-Id"] for _, h in receiver.received} >= set(ids), 30)
    store.close()


def test_webhook_url_checked_on_create(tmp_path: Path, catalog: Catalog, store: Store, keys: Keys) -> None:
    gateway = make_gateway(catalog, store, routes_for("http://127.0.0.1:9/v1"), tmp_path)  # production policy
    with running(gateway) as r:
        h = {"Authorization": f"Bearer {keys.admin}"}
        for url in (
            "http://127.0.0.1:8080/hook",
            "https://127.0.0.1/hook",
            "https://169.254.169.254/latest/user-data",
        ):
            resp = requests.post(f"{r.url}{API}/deployments/dep_a/webhooks", headers=h, json={"url": url})
            assert resp.status_code == 400 and resp.json()["error"]["code"] == "unsafe_url", url
        bad_events = requests.post(
            f"{r.url}{API}/deployments/dep_a/webhooks",
            headers=h,
            json={"url": "https://hooks.example.com", "events": ["deployment.exploded"]},
        )
        assert bad_events.status_code == 400
        other = requests.post(
            f"{r.url}{API}/deployments/dep_a/webhooks",
            json={"url": "https://x.example"},
            headers={"Authorization": f"Bearer {keys.other_org}"},
        )
        assert other.status_code == 404


def test_lease_moves_when_the_holder_dies(store: Store) -> None:
    assert store.acquire_lease("sender", "a", ttl_s=10, now=100.0)
    assert not store.acquire_lease("sender", "b", ttl_s=10, now=105.0)
    assert store.acquire_lease("sender", "a", ttl_s=10, now=108.0)  # renewal
    assert not store.acquire_lease("sender", "b", ttl_s=10, now=117.0)
    assert store.acquire_lease("sender", "b", ttl_s=10, now=118.5)  # a stopped renewing: b takes over
    assert not store.acquire_lease("sender", "a", ttl_s=10, now=119.0)


@pytest.mark.parametrize(
    "body",
    [
        {"url": "https://1.1.1.1/€"},
        {"url": "https://1.1.1.1:99999/"},
        {"url": "https://[::1/"},
        {"url": "https://1.1.1.1/a b"},
        {"url": "https://1.1.1.1/", "events": [[1]]},
        {"url": "https://1.1.1.1/", "events": [{"a": 1}]},
    ],
)
def test_malformed_webhooks_are_refused_at_registration(
    gw: Running, keys: Keys, body: dict[str, Any]
) -> None:
    resp = requests.post(
        f"{gw.url}{API}/deployments/dep_a/webhooks",
        headers={"Authorization": f"Bearer {keys.admin}"},
        json=body,
    )
    assert resp.status_code == 400, resp.text


def test_a_webhook_that_cannot_be_sent_fails_alone(
    tmp_path: Path, catalog: Catalog, store: Store, keys: Keys
) -> None:
    """A URL that slipped in before today's checks (stored as is) fails its own deliveries; the others go."""
    from agentcloud.control.webhooks import seal

    receiver = Receiver(fail_rate=0.0)
    with receiver.serving(), running(_gateway(catalog, store, tmp_path)) as r:
        store.create_webhook(
            "whk_bad", "org_a", "dep_a", "https://1.1.1.1/€", ["deployment.scaled"], seal(PEPPER, "s")
        )
        _subscribe(f"http://127.0.0.1:{receiver.port}/hook", r.url, keys)
        ids = r.run(r.gateway.control.webhooks.emit("dep_a", "deployment.scaled", {"replicas": 2}))
        assert len(ids) == 2
        assert wait_for(lambda: len(receiver.received) == 1, 10)
        assert wait_for(lambda: any(row["last_error"] and row["attempts"] for row in store.outbox()), 10)
    bad = [row for row in store.outbox() if row["last_error"]]
    assert bad and all(not row["delivered_at"] for row in bad)


def test_each_attempt_is_signed_with_its_time_and_replays_fail(
    tmp_path: Path, catalog: Catalog, store: Store, keys: Keys
) -> None:
    """Retries carry a fresh signed timestamp (accepted); a captured attempt replayed later or again is
    not."""
    receiver = Receiver(fail_rate=0.5)
    with receiver.serving(), running(_gateway(catalog, store, tmp_path)) as r:
        secret = _subscribe(f"http://127.0.0.1:{receiver.port}/hook", r.url, keys)
        ids = []
        for i in range(10):
            ids += r.run(r.gateway.control.webhooks.emit("dep_a", "deployment.scaled", {"replicas": i}))
        assert wait_for(lambda: {h["X-AINative-Event-Id"] for _, h in receiver.received} >= set(ids), 30)
    assert max(row["attempts"] for row in store.outbox()) > 1, "some events needed a retry"
    seen: set[str] = set()
    for body, headers in receiver.received:
        assert verify(body, headers["X-AINative-Signature"], secret)  # the reference's check still holds
        assert verify_delivery(secret, body, headers, seen), headers
    body, headers = receiver.received[0]
    assert not verify_delivery(secret, body, headers, seen), "an id already processed"
    later = time.time() + 600
    assert not verify_delivery(secret, body, headers, set(), now=later), "a replay after the window"
    forged = {**headers, "X-AINative-Timestamp": str(int(later))}
    assert not verify_delivery(secret, body, forged, set(), now=later), "a timestamp moved by the replayer"

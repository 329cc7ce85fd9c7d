"""Rate limits and concurrency: the GCRA itself, headers on every response, and exact limits across two
gateway processes that share a real Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from agentcloud.catalog import Catalog
from agentcloud.gateway.limits import MemoryConcurrency, MemoryRateLimiter, RedisConcurrency, RedisRateLimiter
from agentcloud.store import Store
from tests.gateway.conftest import assert_counters_released
from tests.gateway.fake_upstream import FakeUpstream
from tests.gateway.harness import (
    CHAT_MODEL,
    PEPPER,
    Keys,
    Running,
    make_gateway,
    routes_for,
    running,
    wait_for,
)
from tests.sshd import free_port

CHAT: dict[str, Any] = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_gcra_burst_then_refill() -> None:
    clock = Clock()
    lim = MemoryRateLimiter(clock)
    run = asyncio.run
    decisions = [run(lim.check("k", 10, None, 0)) for _ in range(11)]
    assert [d.allowed for d in decisions if d] == [True] * 10 + [False]
    assert [d.remaining for d in decisions if d][:10] == list(range(9, -1, -1))
    denied = decisions[-1]
    assert denied is not None and denied.retry_after_s == pytest.approx(6.0) and denied.remaining == 0
    clock.now += 6.0  # one request's worth (60 s / 10) refilled
    assert run(lim.check("k", 10, None, 0)).allowed  # type: ignore[union-attr]
    assert not run(lim.check("k", 10, None, 0)).allowed  # type: ignore[union-attr]


def test_tokens_reserved_then_settled() -> None:
    clock = Clock()
    lim = MemoryRateLimiter(clock)
    run = asyncio.run
    assert run(lim.check("k", None, 1000, 900)).allowed  # type: ignore[union-attr]
    assert not run(lim.check("k", None, 1000, 900)).allowed  # type: ignore[union-attr]
    run(lim.settle("k", 1000, 20 - 900))  # the call really used 20 tokens: refund the rest
    assert run(lim.check("k", None, 1000, 900)).allowed  # type: ignore[union-attr]


def test_redis_limiter_matches_memory(redis_url: str) -> None:
    import redis.asyncio as aioredis

    async def scenario() -> list[bool]:
        client = aioredis.from_url(redis_url)
        await client.flushdb()
        lim = RedisRateLimiter(client)
        decisions = [await lim.check("k", 5, 10_000, 100) for _ in range(7)]
        out = [d is not None and d.allowed for d in decisions]
        conc = RedisConcurrency(client)
        a = await conc.acquire("dep", 2)
        b = await conc.acquire("dep", 2)
        c = await conc.acquire("dep", 2)
        assert a and b and c is None and await conc.in_flight("dep") == 2
        await conc.release("dep", a)
        assert await conc.in_flight("dep") == 1
        await conc.release("dep", b)
        await client.aclose()
        return out

    assert asyncio.run(scenario()) == [True] * 5 + [False] * 2


def _post(
    r: Running, key: str, body: dict[str, Any] = CHAT, path: str = "/v1/chat/completions"
) -> requests.Response:
    return requests.post(r.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=15)


def test_headers_on_every_response_and_429(gw: Running, keys: Keys) -> None:
    # The free plan allows 10 requests/min.
    first = _post(gw, keys.standard)
    assert first.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == "10" and first.headers["X-RateLimit-Remaining"] == "9"
    assert int(first.headers["X-RateLimit-Reset"]) >= 1
    streamed = _post(gw, keys.standard, {**CHAT, "stream": True})
    assert streamed.status_code == 200 and streamed.headers["X-RateLimit-Remaining"] == "8"
    bad_body = _post(gw, keys.standard, {"model": CHAT_MODEL})  # 400s count and carry the headers too
    assert bad_body.status_code == 400
    statuses = [_post(gw, keys.standard).status_code for _ in range(8)]
    assert statuses == [200] * 7 + [429]
    limited = _post(gw, keys.standard)
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["X-RateLimit-Remaining"] == "0" and int(limited.headers["Retry-After"]) >= 1
    assert _post(gw, keys.basic).status_code == 200, "limits are per key"


def test_deployment_concurrency_limit(
    catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream
) -> None:
    gateway = make_gateway(catalog, store, routes_for(upstream.base_url, concurrency_limit=1))
    with running(gateway) as r:
        slow = {
            **CHAT,
            "stream": True,
            "messages": [{"role": "user", "content": "[[chunks=10]] [[gap=0.1]]"}],
        }
        path = "/api/v1/public/deployments/dep_a/chat/completions"
        holder = threading.Thread(target=_post, args=(r, keys.admin, slow, path))
        holder.start()
        deadline = time.monotonic() + 5
        while upstream.stats.active == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = _post(r, keys.admin, CHAT, path)
        assert busy.status_code == 429 and busy.json()["error"]["code"] == "concurrency_limit"
        assert busy.headers["Retry-After"] == "1"
        holder.join(10)
        assert _post(r, keys.admin, CHAT, path).status_code == 200
    assert_counters_released(r)
    assert isinstance(r.gateway.concurrency, MemoryConcurrency)


def _serve(port: int, db: Path, routes: Path, redis_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AGENTCLOUD_DATABASE": str(db),
        "AGENTCLOUD_KEY_PEPPER": PEPPER.decode(),
        "AGENTCLOUD_UPLOAD_DIR": str(db.parent / f"uploads-{port}"),
    }
    exe = Path(sys.executable).parent / "agentcloud"
    return subprocess.Popen(
        [str(exe), "gateway", "serve", "--port", str(port), "--routes", str(routes), "--redis", redis_url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_limits_exact_across_two_gateway_processes(
    tmp_path: Path, redis_url: str, upstream: FakeUpstream
) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    db = tmp_path / "gw.sqlite3"
    store = Store(str(db))
    org = store.create_org("acme")
    _, token = store.create_key(PEPPER, org, "shared", "free")  # 10 requests/min
    store.close()
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"models:\n  - model_id: {CHAT_MODEL}\n    base_url: {upstream.base_url}\n")
    ports = [free_port(), free_port()]
    procs = [_serve(p, db, routes, redis_url) for p in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
                assert time.monotonic() < deadline, "gateway process did not start"
                time.sleep(0.1)
        statuses = [
            requests.post(
                f"http://127.0.0.1:{ports[i % 2]}/v1/chat/completions",
                json=CHAT,
                timeout=15,
                headers={"Authorization": f"Bearer {token}"},
            ).status_code
            for i in range(30)
        ]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)
    assert statuses.count(200) == 10, f"the plan allows 10/min across all gateways, got {statuses.count(200)}"
    assert statuses.count(429) == 20
    assert upstream.stats.requests == 10


def test_redis_down_answers_503_and_every_gauge_settles(
    catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream
) -> None:
    """Redis stops while streams are in flight: they finish, every gauge returns to 0, new requests get 503
    with Retry-After quickly (not a 500, not a hang, not unlimited), and Redis coming back heals it."""
    from tests.services import redis_process

    slow = {**CHAT, "stream": True, "messages": [{"role": "user", "content": "[[chunks=8]] [[gap=0.1]]"}]}
    path = "/api/v1/public/deployments/dep_a/chat/completions"
    with redis_process() as (url, redis_proc):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        gateway = make_gateway(
            catalog, store, routes_for(upstream.base_url, concurrency_limit=8), redis_url=url
        )
        assert isinstance(gateway.concurrency, RedisConcurrency)
        with running(gateway) as r:
            assert _post(r, keys.admin, CHAT, path).status_code == 200
            streams: list[int] = []
            threads = [
                threading.Thread(target=lambda: streams.append(_post(r, keys.admin, slow, path).status_code))
                for _ in range(4)
            ]
            for t in threads:
                t.start()
            assert wait_for(lambda: upstream.stats.active == 4, 5)
            redis_proc.kill()
            redis_proc.wait(5)
            for t in threads:
                t.join(10)
            assert streams == [200] * 4, "streams in flight finish without Redis"
            started = time.monotonic()
            for key, body in ((keys.admin, CHAT), (keys.standard, CHAT)):  # concurrency / requests-per-minute
                down = _post(r, key, body, path if key == keys.admin else "/v1/chat/completions")
                assert down.status_code == 503, down.text
                assert down.json()["error"]["code"] == "limits_unavailable"
                assert int(down.headers["Retry-After"]) >= 1
            assert time.monotonic() - started < 5, "a Redis that is down must not hold requests"
            assert_counters_released(r)
            with redis_process(port):
                assert wait_for(lambda: _post(r, keys.admin, CHAT, path).status_code == 200, 10)
            assert_counters_released(r)


def test_a_token_limit_429_describes_the_token_rate(
    gw: Running, store: Store, upstream: FakeUpstream
) -> None:
    """A refusal by the token rate says so in its headers: no `X-RateLimit-Remaining: 999` of the request
    rate that still had room."""
    _, token = store.create_key(
        PEPPER, "org_a", "tokens", "free", requests_per_minute=1000, tokens_per_minute=600
    )
    slow = {**CHAT, "stream": True, "max_tokens": 500}
    slow["messages"] = [{"role": "user", "content": "[[chunks=10]] [[gap=0.1]]"}]
    holder = threading.Thread(target=_post, args=(gw, token, slow))
    holder.start()  # holds a reservation of ~500 tokens while it streams
    assert wait_for(lambda: upstream.stats.active == 1, 5)
    refused = _post(gw, token, {**CHAT, "max_tokens": 500})
    holder.join(10)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "token_rate_limit_exceeded"
    assert refused.headers["X-RateLimit-Limit"] == "600" and refused.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.headers["Retry-After"]) >= 1


def test_a_request_refused_for_concurrency_keeps_no_tokens(
    catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream
) -> None:
    _, token = store.create_key(
        PEPPER, "org_a", "t", "free", requests_per_minute=1000, tokens_per_minute=1000
    )
    gateway = make_gateway(catalog, store, routes_for(upstream.base_url, concurrency_limit=1))
    path = "/api/v1/public/deployments/dep_a/chat/completions"
    slow = {
        **CHAT,
        "stream": True,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "[[chunks=10]] [[gap=0.1]]"}],
    }
    with running(gateway) as r:
        holder = threading.Thread(target=_post, args=(r, token, slow, path))
        holder.start()
        assert wait_for(lambda: upstream.stats.active == 1, 5)
        for _ in range(5):  # each reserves ~150 tokens, then is refused by the concurrency limit
            busy = _post(r, token, {**CHAT, "max_tokens": 150}, path)
            assert busy.status_code == 429 and busy.json()["error"]["code"] == "concurrency_limit"
        holder.join(10)
        big = _post(r, token, {**CHAT, "max_tokens": 800}, path)
        assert big.status_code == 200, "the refused requests' reservations were given back"
    assert_counters_released(r)

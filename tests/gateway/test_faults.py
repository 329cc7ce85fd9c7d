"""Failing upstreams: fallback before the first byte, explicit errors after it, timeouts, disconnects."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
import requests

from agentcloud.catalog import Catalog
from agentcloud.gateway.routing import RouteTable
from agentcloud.store import Store
from tests.gateway.conftest import assert_counters_released
from tests.gateway.fake_upstream import FakeUpstream, fake_upstream
from tests.gateway.harness import CHAT_MODEL, PEPPER, Keys, Running, make_gateway, running, target, wait_for
from tests.sshd import free_port


@contextmanager
def gateway_over(catalog: Catalog, store: Store, urls: list[str], **config: Any) -> Iterator[Running]:
    table = RouteTable()
    table.models[CHAT_MODEL] = [target(u, name=f"t{i}") for i, u in enumerate(urls)]
    with running(make_gateway(catalog, store, table, **config)) as r:
        yield r
    assert_counters_released(r)


def ask(r: Running, key: str, text: str = "hi", **kw: Any) -> Any:
    return r.openai(key).chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": text}], **kw
    )


def sse_lines(r: Running, key: str, text: str) -> list[bytes]:
    resp = requests.post(
        f"{r.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=15,
        json={"model": CHAT_MODEL, "stream": True, "messages": [{"role": "user", "content": text}]},
    )
    assert resp.status_code == 200
    return [line for line in resp.content.split(b"\n") if line.startswith(b"data:")]


@pytest.mark.parametrize("fault", ["500", "429", "close"])
def test_fallback_before_first_byte(catalog: Catalog, store: Store, keys: Keys, fault: str) -> None:
    with (
        fake_upstream(defaults={"fault": fault}) as bad,
        fake_upstream() as good,
        gateway_over(catalog, store, [bad.base_url, good.base_url]) as r,
    ):
        assert ask(r, keys.standard).choices[0].message.content == "echo: hi"  # type: ignore[attr-defined]
        stream = list(ask(r, keys.standard, "a b", stream=True))  # type: ignore[call-overload]
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: a b"
        assert bad.stats.requests == 2 and good.stats.requests == 2


def test_fallback_on_connection_refused(
    catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream
) -> None:
    refused = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with gateway_over(catalog, store, [refused, upstream.base_url]) as r:
        assert ask(r, keys.standard).choices[0].message.content == "echo: hi"  # type: ignore[attr-defined]


def test_all_upstreams_failing_is_502_naming_each(catalog: Catalog, store: Store, keys: Keys) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with (
        fake_upstream(defaults={"fault": "500"}) as a,
        gateway_over(catalog, store, [a.base_url, dead]) as r,
        pytest.raises(openai.APIStatusError) as err,
    ):
        ask(r, keys.standard)
    assert err.value.status_code == 502
    assert "t0: HTTP 500" in err.value.message and "t1: ConnectionRefusedError" in err.value.message


@pytest.mark.parametrize("fault", ["midstream", "nodone"])
def test_mid_stream_failure_ends_with_an_error_event(
    catalog: Catalog, store: Store, keys: Keys, fault: str
) -> None:
    with (
        fake_upstream() as up,
        fake_upstream() as spare,
        gateway_over(catalog, store, [up.base_url, spare.base_url]) as r,
    ):
        lines = sse_lines(r, keys.standard, f"one two three four [[fault={fault}]]")
        assert b"data: [DONE]" not in lines, "a broken stream must never look finished"
        assert b'"stream_interrupted"' in lines[-1]
        with pytest.raises(openai.APIError):
            list(ask(r, keys.standard, f"one two three four [[fault={fault}]]", stream=True))
        assert spare.stats.requests == 0, "no fallback after the first byte"
        assert wait_for(lambda: r.gateway.metrics.models[CHAT_MODEL].errors == 2)


def test_first_byte_timeout(catalog: Catalog, store: Store, keys: Keys) -> None:
    with (
        fake_upstream(defaults={"delay": "3"}) as slow,
        gateway_over(catalog, store, [slow.base_url], first_byte_timeout_s=0.3) as r,
    ):
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as err:
            ask(r, keys.standard)
        assert err.value.status_code == 504 and "timeout" in err.value.message
        assert time.monotonic() - started < 2


def test_first_byte_timeout_falls_back(
    catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream
) -> None:
    with (
        fake_upstream(defaults={"delay": "3"}) as slow,
        gateway_over(catalog, store, [slow.base_url, upstream.base_url], first_byte_timeout_s=0.3) as r,
    ):
        assert ask(r, keys.standard).choices[0].message.content == "echo: hi"  # type: ignore[attr-defined]


def test_idle_timeout_between_chunks(catalog: Catalog, store: Store, keys: Keys) -> None:
    with (
        fake_upstream(defaults={"stall": "3"}) as stalling,
        gateway_over(catalog, store, [stalling.base_url], idle_timeout_s=0.3) as r,
    ):
        started = time.monotonic()
        lines = sse_lines(r, keys.standard, "x y")
        assert time.monotonic() - started < 2
        assert b'"stream_interrupted"' in lines[-1] and b"TimeoutError" in lines[-1]


def test_connect_timeout(catalog: Catalog, store: Store, keys: Keys) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so connect() hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    try:
        with gateway_over(
            catalog, store, [f"http://127.0.0.1:{port}/v1"], connect_timeout_s=0.3, first_byte_timeout_s=10
        ) as r:
            started = time.monotonic()
            with pytest.raises(openai.APIStatusError) as err:
                ask(r, keys.standard)
            assert err.value.status_code == 504 and time.monotonic() - started < 3
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_client_disconnect_cancels_upstream(
    catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream
) -> None:
    with gateway_over(catalog, store, [upstream.base_url]) as r:
        resp = requests.post(
            f"{r.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {keys.standard}"},
            json={
                "model": CHAT_MODEL,
                "stream": True,
                "messages": [{"role": "user", "content": "[[chunks=100]] [[gap=0.1]]"}],
            },
            stream=True,
            timeout=15,
        )
        first = next(resp.iter_content(chunk_size=None))
        assert first.startswith(b"data:")
        resp.close()  # the client goes away 10 s before the stream would end
        assert wait_for(lambda: upstream.stats.broken_streams == 1, 5), (
            "the upstream stream was not cancelled"
        )
        assert wait_for(lambda: r.gateway.metrics.models[CHAT_MODEL].active == 0, 5)
        assert upstream.stats.completed_streams == 0


def test_circuit_breaker_stops_trying_a_dead_upstream(
    catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream
) -> None:
    with (
        fake_upstream(defaults={"fault": "500"}) as bad,
        gateway_over(catalog, store, [bad.base_url, upstream.base_url]) as r,
    ):
        for _ in range(10):
            assert ask(r, keys.standard).choices[0].message.content == "echo: hi"
        assert bad.stats.requests == 5, "the breaker opens after 5 consecutive failures"
        assert upstream.stats.requests == 10
        assert r.gateway.routes.breakers(r.gateway.routes.models[CHAT_MODEL][0]).state in (
            "open",
            "half-open",
        )


def test_a_disconnect_storm_leaves_every_gauge_at_zero(
    catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream
) -> None:
    """500 streaming clients leave mid-stream at once: every upstream stream is cancelled, every gauge returns
    to 0, and none of them counts as an error (499), in the metrics or in usage."""
    import asyncio as aio

    import aiohttp

    n = 500
    body = {
        "model": CHAT_MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "[[chunks=60]] [[gap=0.05]]"}],
    }

    _, token = store.create_key(PEPPER, "org_a", "storm", "enterprise")  # no rate limit: not what is tested

    async def storm(url: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> int:
                resp = await session.post(f"{url}/v1/chat/completions", json=body, headers=headers)
                first = await resp.content.readany()
                resp.close()  # gone, 2 s before the stream would end
                return int(first.startswith(b"data:"))

            return sum(await aio.gather(*(one() for _ in range(n))))

    with gateway_over(catalog, store, [upstream.base_url]) as r:
        assert aio.run(storm(r.url)) == n, "every stream had started"
        assert wait_for(lambda: upstream.stats.broken_streams == n, 20), upstream.stats.broken_streams
        series = r.gateway.metrics.models[CHAT_MODEL]
        assert wait_for(lambda: series.active == 0, 10)
        assert series.requests == n and series.errors == 0
        r.run(r.gateway.data.accountant.flush())
        rows = store._exec("SELECT SUM(requests), SUM(errors) FROM usage WHERE model_id = ?", (CHAT_MODEL,))
        assert rows[0] == (n, 0), rows
        assert_counters_released(r)


def test_the_store_down_answers_503_and_usage_waits_in_the_journal(
    catalog: Catalog, upstream: FakeUpstream
) -> None:
    """PostgreSQL stops: a key the gateway must look up gets 503 with Retry-After (not a 500), a cached key
    is still served, and usage waits in the journal; PostgreSQL back, the gateway reconnects and the usage
    lands."""
    from agentcloud.gateway.routing import RouteTable
    from tests.gateway.harness import seed, target
    from tests.services import postgres_cluster

    with postgres_cluster() as pg:
        store = Store(pg.url)
        keys = seed(store)
        table = RouteTable()
        table.models[CHAT_MODEL] = [target(upstream.base_url)]
        with running(make_gateway(catalog, store, table)) as r:

            def chat(key: str) -> requests.Response:
                return requests.post(
                    f"{r.url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]},
                    timeout=15,
                )

            assert chat(keys.admin).status_code == 200  # cached from here on
            pg.stop()
            assert chat(keys.admin).status_code == 200, "a cached key needs no store"
            down = chat(keys.standard)
            assert down.status_code == 503 and down.json()["error"]["code"] == "store_unavailable"
            assert int(down.headers["Retry-After"]) >= 1
            time.sleep(0.2)  # a flush or two fail meanwhile
            pg.start()
            assert wait_for(lambda: chat(keys.standard).status_code == 200, 10)

            def metered() -> int:
                rows = store._exec("SELECT COALESCE(SUM(requests), 0) FROM usage")
                return int(rows[0][0])

            assert wait_for(lambda: metered() == 3, 10), metered()
        store.close()

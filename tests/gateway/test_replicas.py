"""A deployment's replicas share the load through the real gateway: every replica serves, requests that share
a system prompt meet the same replica, a replica that goes away is taken out and comes back, and a routes-file
model with several endpoints spreads the same way."""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests

from agentcloud.catalog import Catalog, Routing
from agentcloud.gateway.app import Gateway
from agentcloud.gateway.routing import Deployment, RouteTable
from agentcloud.store import Store
from tests.gateway.fake_upstream import FakeUpstream, fake_upstream
from tests.gateway.harness import CHAT_MODEL, Keys, Running, make_gateway, running, seed, target, wait_for

API = "/api/v1/public"


@pytest.fixture
def keys(store: Store) -> Keys:
    return seed(store, requests_per_minute=100_000)  # these tests are not about limits


@pytest.fixture
def replicas() -> Iterator[list[FakeUpstream]]:
    with ExitStack() as stack:
        yield [stack.enter_context(fake_upstream()) for _ in range(3)]


def _gateway(
    catalog: Catalog, store: Store, ups: list[FakeUpstream], routing: Routing, **config: Any
) -> Gateway:
    table = RouteTable()
    targets = tuple(target(u.base_url, f"dep_r#{i}", deployment_id="dep_r") for i, u in enumerate(ups))
    table.add_deployment(Deployment("dep_r", "org_a", "dep_r", CHAT_MODEL, targets, routing=routing))
    return make_gateway(catalog, store, table, **config)


def _chat(r: Running, key: str, system: str, user: str) -> int:
    body = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
    url = f"{r.url}{API}/deployments/dep_r/chat/completions"
    return requests.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=15).status_code


def _served(ups: list[FakeUpstream]) -> list[int]:
    return [u.stats.requests for u in ups]


@pytest.mark.parametrize("routing", list(Routing))
def test_every_replica_serves(
    catalog: Catalog, store: Store, keys: Keys, replicas: list[FakeUpstream], routing: Routing
) -> None:
    with running(_gateway(catalog, store, replicas, routing)) as r:
        for i in range(30):
            assert _chat(r, keys.standard, f"tenant {i % 10} system prompt", f"q{i}") == 200
    served = _served(replicas)
    assert sum(served) == 30 and min(served) >= 3, served  # not replica 0 alone, as before


def test_a_system_prompt_meets_the_same_replica(
    catalog: Catalog, store: Store, keys: Keys, replicas: list[FakeUpstream]
) -> None:
    with running(_gateway(catalog, store, replicas, Routing.PREFIX_AWARE)) as r:
        for i in range(24):
            assert (
                _chat(r, keys.standard, f"long shared system prompt of tenant {i % 6} " * 20, f"q{i}") == 200
            )
    homes: dict[str, set[int]] = collections.defaultdict(set)
    for n, up in enumerate(replicas):
        for body in up.stats.bodies:
            if int(body["messages"][1]["content"][1:]) >= 12:  # once each tenant has been seen twice
                homes[body["messages"][0]["content"]].add(n)
    assert len(homes) == 6 and all(len(h) == 1 for h in homes.values()), homes  # sequential: always room
    assert len({next(iter(h)) for h in homes.values()}) >= 2, "six tenants over more than one replica"


def test_concurrent_requests_of_one_tenant_spill_within_the_bound(
    catalog: Catalog, store: Store, keys: Keys, replicas: list[FakeUpstream]
) -> None:
    with (
        running(_gateway(catalog, store, replicas, Routing.PREFIX_AWARE)) as r,
        concurrent.futures.ThreadPoolExecutor(6) as pool,
    ):
        codes = list(
            pool.map(lambda i: _chat(r, keys.standard, "one hot tenant", f"[[delay=0.3]] {i}"), range(6))
        )
    assert codes == [200] * 6
    assert max(_served(replicas)) <= 4, _served(replicas)  # ceil(2 * 6 / 3): the hot prefix spread out


def test_a_replica_that_goes_away_is_taken_out_and_comes_back(
    catalog: Catalog, store: Store, keys: Keys, replicas: list[FakeUpstream]
) -> None:
    with running(_gateway(catalog, store, replicas, Routing.LEAST_LOAD, probe_interval_s=0.2)) as r:
        balancer = r.gateway.data.upstreams.balancer
        gone = replicas[1]
        gone.stop()
        assert wait_for(lambda: gone.base_url in balancer.unhealthy, 5)
        before = _served(replicas)
        assert all(_chat(r, keys.standard, "s", f"q{i}") == 200 for i in range(12))
        after = _served(replicas)
        assert after[0] - before[0] >= 5 and after[2] - before[2] >= 5  # the others took its share
        gone.start()
        assert wait_for(lambda: gone.base_url not in balancer.unhealthy, 5)
        assert all(_chat(r, keys.standard, "s", f"back{i}") == 200 for i in range(9))
        assert gone.stats.requests >= 2, "probed back in and serving again"


def test_a_routes_file_model_with_endpoints_spreads(
    tmp_path: Path, catalog: Catalog, store: Store, keys: Keys, replicas: list[FakeUpstream]
) -> None:
    routes = tmp_path / "routes.yaml"
    endpoints = "".join(f"\n      - {u.base_url}" for u in replicas)
    routes.write_text(
        f"models:\n  - model_id: my-replicated\n    routing: least_load\n    endpoints:{endpoints}\n"
    )
    gateway = make_gateway(catalog, store, RouteTable(), tmp_path)
    from agentcloud.gateway.routing import load_routes

    load_routes(gateway.routes, routes)
    with running(gateway) as r:
        client = r.openai(keys.admin)
        for i in range(9):
            client.chat.completions.create(
                model="my-replicated", messages=[{"role": "user", "content": f"{i}"}]
            )
    assert _served(replicas) == [3, 3, 3]


def test_the_probe_forgets_the_slots_of_replicas_scaled_away(replicas: list[FakeUpstream]) -> None:
    import asyncio

    from agentcloud.gateway.probe import ReplicaProbe
    from agentcloud.upstream.proxy import Timeouts, Upstreams
    from agentcloud.upstream.target import Breakers

    table = RouteTable()
    targets = tuple(
        target(u.base_url, f"dep_r#{i}", deployment_id="dep_r") for i, u in enumerate(replicas[:2])
    )
    table.add_deployment(Deployment("dep_r", "org_a", "dep_r", CHAT_MODEL, targets))
    upstreams = Upstreams(Breakers(), Timeouts())
    balancer = upstreams.balancer
    gone = "http://10.9.9.9:8000/v1"  # a droplet removed by a scale-down
    balancer.slots = {gone: 2, targets[0].base_url: 2}
    balancer.acquire(target(gone), 7)
    assert gone in balancer.slot_state

    async def one_round() -> None:
        await upstreams.start()
        try:
            await ReplicaProbe(table, upstreams, 1.0).round()
        finally:
            await upstreams.close()

    asyncio.run(one_round())
    assert gone not in balancer.slots and gone not in balancer.slot_state
    assert balancer.slots == {targets[0].base_url: 2}  # a replica still there keeps what was read

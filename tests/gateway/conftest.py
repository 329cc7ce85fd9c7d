from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentcloud.catalog import Catalog
from agentcloud.store import Store
from tests.gateway.fake_upstream import FakeUpstream, fake_upstream
from tests.gateway.harness import Keys, Running, make_gateway, routes_for, running, seed


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store(":memory:")
    yield s
    s.close()


@pytest.fixture
def keys(store: Store) -> Keys:
    return seed(store)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


@pytest.fixture
def gw(catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream) -> Iterator[Running]:
    gateway = make_gateway(catalog, store, routes_for(upstream.base_url, concurrency_limit=50))
    with running(gateway) as r:
        yield r
    assert_counters_released(r)


def assert_counters_released(r: Running) -> None:
    """Every test ends with nothing in flight: concurrency leases and active gauges back at zero."""
    from agentcloud.gateway.limits import MemoryConcurrency
    from tests.gateway.harness import wait_for

    wait_for(
        lambda: all(
            s.active == 0 for s in {**r.gateway.metrics.models, **r.gateway.metrics.deployments}.values()
        )
    )
    conc = r.gateway.concurrency
    if isinstance(conc, MemoryConcurrency):
        assert conc._active == {}, f"leaked concurrency leases: {conc._active}"
    for name, series in {**r.gateway.metrics.models, **r.gateway.metrics.deployments}.items():
        assert series.active == 0, f"{name} still counts {series.active} active requests"

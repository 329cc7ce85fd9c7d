"""The twin of DigitalOcean's v2 API (agentcloud.twin.api), driven through pydo as the program and the CLI
drive the real one: its answers, its error shapes, and the faults it injects."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from agentcloud.twin.api import Faults, Twin, serve_twin

TOKEN = "dop_v1_twin"
SIZES = [
    {"slug": "gpu-h100x1-80gb", "available": True, "regions": ["nyc2", "tor1"], "price_hourly": 4.41},
    {"slug": "gpu-l40sx1-48gb", "available": True, "regions": ["tor1"], "price_hourly": 1.57},
]
HTTP: dict[str, Any] = {"enforce_https": False}


@pytest.fixture
def twin() -> Iterator[tuple[Twin, Any]]:
    import pydo

    state = Twin(token=TOKEN, sizes=SIZES, boot_s=0.2, faults=Faults(retry_after_s=0))
    with serve_twin(state) as url:
        yield state, pydo.Client(token=TOKEN, endpoint=url)


def _droplet(client: Any, name: str, **kw: Any) -> dict[str, Any]:
    body = {"name": name, "region": "nyc2", "size": "gpu-h100x1-80gb", "image": "gpu-h100x1-base", **kw}
    return dict(client.droplets.create(body=body, **HTTP)["droplet"])


def test_account_sizes_and_regions(twin: tuple[Twin, Any]) -> None:
    _, client = twin
    assert client.account.get(**HTTP)["account"]["status"] == "active"
    sizes = client.sizes.list(per_page=1, page=2, **HTTP)
    assert [s["slug"] for s in sizes["sizes"]] == ["gpu-l40sx1-48gb"] and sizes["meta"]["total"] == 2
    assert "tor1" in {r["slug"] for r in client.regions.list(**HTTP)["regions"]}


def test_droplets_boot_and_a_size_a_region_lacks_is_a_422(twin: tuple[Twin, Any]) -> None:
    state, client = twin
    vpc = client.vpcs.create(body={"name": "v", "region": "nyc2", "ip_range": "10.20.0.0/24"}, **HTTP)["vpc"]
    made = _droplet(client, "a-0", tags=["agentcloud"], vpc_uuid=vpc["id"])
    assert made["status"] == "new" and made["networks"]["v4"][0]["ip_address"] == "10.20.0.2"
    time.sleep(0.3)
    assert client.droplets.get(made["id"], **HTTP)["droplet"]["status"] == "active"
    with pytest.raises(HttpResponseError) as err:
        _droplet(client, "a-1", region="tor1", size="gpu-l40sx1-48gb", vpc_uuid=vpc["id"] + "x")
    assert err.value.status_code == 422
    with pytest.raises(HttpResponseError, match=r"Size is not available in this region\."):
        _droplet(client, "a-2", region="ams3")
    with pytest.raises(
        HttpResponseError, match=r"tag 'model:llama-3\.1' is invalid"
    ):  # DigitalOcean's tag rule
        _droplet(client, "a-4", tags=["model:llama-3.1"])
    state.faults.unavailable.add(("gpu-h100x1-80gb", "nyc2"))  # capacity gone, as DigitalOcean says it
    with pytest.raises(HttpResponseError, match=r"Size is not available in this region\."):
        _droplet(client, "a-3")
    assert [d["name"] for d in client.droplets.list(tag_name="agentcloud", **HTTP)["droplets"]] == ["a-0"]
    with pytest.raises(HttpResponseError) as gone:  # a VPC with members cannot go
        client.vpcs.delete(vpc["id"], **HTTP)
    assert gone.value.status_code == 409


def test_a_droplet_that_never_boots_stays_new(twin: tuple[Twin, Any]) -> None:
    state, client = twin
    state.faults.never_boot.add("stuck-0")
    made = _droplet(client, "stuck-0")
    time.sleep(0.3)
    assert client.droplets.get(made["id"], **HTTP)["droplet"]["status"] == "new"


def test_rate_limits_answer_429_with_retry_after_and_pydo_retries(twin: tuple[Twin, Any]) -> None:
    state, client = twin
    state.faults.rate_limited = 2
    before = len(state.requests)
    assert client.account.get(**HTTP)["account"]["status"] == "active"  # azure-core's retry honours 429
    assert len(state.requests) - before == 3


def test_volumes_outlive_their_droplet_and_firewalls_follow(twin: tuple[Twin, Any]) -> None:
    _, client = twin
    droplet = _droplet(client, "c-0")
    volume = client.volumes.create(
        body={"name": "cache-0", "region": "nyc2", "size_gigabytes": 100, "filesystem_type": "ext4"}, **HTTP
    )["volume"]
    client.volume_actions.post_by_id(volume["id"], {"type": "attach", "droplet_id": droplet["id"]}, **HTTP)
    assert client.volumes.get(volume["id"], **HTTP)["volume"]["droplet_ids"] == [droplet["id"]]
    with pytest.raises(HttpResponseError, match="detach it first"):
        client.volumes.delete(volume["id"], **HTTP)
    firewall = client.firewalls.create(
        body={"name": "fw", "inbound_rules": [], "outbound_rules": [], "droplet_ids": [droplet["id"]]}, **HTTP
    )["firewall"]
    client.droplets.destroy(droplet["id"], **HTTP)
    assert client.volumes.get(volume["id"], **HTTP)["volume"]["droplet_ids"] == []  # kept, detached
    assert client.firewalls.get(firewall["id"], **HTTP)["firewall"]["droplet_ids"] == []
    # pydo's droplets.get returns DigitalOcean's 404 body rather than raising (reference/digitalocean.md)
    assert client.droplets.get(droplet["id"], **HTTP)["id"] == "not_found"


def test_errors_have_digitaloceans_shape(twin: tuple[Twin, Any]) -> None:
    import requests

    state, _ = twin
    with serve_twin(state) as url:
        answer = requests.get(
            f"{url}/v2/droplets/999", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        )
        assert answer.status_code == 404
        body = answer.json()
        assert body["id"] == "not_found" and body["message"] and body["request_id"]
        assert requests.get(f"{url}/v2/account", timeout=5).status_code == 401

"""Capacity-aware provisioning (issue 14): a stack whose first choice DigitalOcean answers "Size is not
available in this region." lands on its next fallback, and says so. The up is the real Pulumi program run
in-process under Pulumi's mocks, its droplets created through pydo on a local stand-in of the v2 API."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentcloud.catalog import Catalog
from agentcloud.lifecycle.mocked import ProgramOps
from agentcloud.lifecycle.operations import prepare_api_workspace
from agentcloud.lifecycle.placement import NoCapacity, is_capacity_error
from tests.fake_digitalocean import TOKEN, fake_digitalocean

H100_NYC2_ONLY = [
    {"slug": "gpu-h100x1-80gb", "available": True, "regions": ["nyc2"], "price_hourly": 4.41},
    {"slug": "gpu-h200x1-141gb", "available": True, "regions": ["atl1", "nyc2"], "price_hourly": 4.47},
]


def stack(workspace: Path, **deployment: Any) -> str:
    body = {
        "name": "fallback-8b",
        "model_id": "llama-3.1-8b-instruct",
        "region": "tor1",
        "gpu_type": "h100",
        "preset": "latency",
        "ssh": {"allowed_cidrs": ["198.51.100.0/24"]},
        **deployment,
    }
    (workspace / f"Pulumi.{body['name']}.yaml").write_text(
        yaml.safe_dump({"config": {"agent-cloud:deployment": body}})
    )
    return str(body["name"])


def test_no_capacity_in_the_first_choice_lands_on_the_next(tmp_path: Path, catalog: Catalog) -> None:
    workspace = prepare_api_workspace(tmp_path / "ws")
    name = stack(workspace, fallbacks=[{"region": "nyc2"}, {"region": "atl1", "gpu_type": "h200"}])
    said: list[str] = []
    with fake_digitalocean(H100_NYC2_ONLY) as url:
        ops = ProgramOps(workspace, url, TOKEN)
        out = ops.up(name, said.append)
        assert out["placement"]["index"] == 1 and out["placement"]["where"] == "nyc2 on h100"
        assert any(
            "no capacity for tor1 on h100 (Size is not available in this region.); 2 fallback(s) left" in m
            for m in said
        ), said
        assert any(m.startswith("landed on fallback 1: nyc2 on h100") for m in said), said
        (endpoint,) = out["endpoints"]
        vpc = ops.client.vpcs.list(enforce_https=False)["vpcs"][0]  # the droplet is in its deployment's VPC
        assert ipaddress.ip_address(endpoint["private_ip"]) in ipaddress.ip_network(vpc["ip_range"])
        assert endpoint["port"] == 8000
        droplets = ops.client.droplets.list(enforce_https=False)["droplets"]
        assert [(d["name"], d["region"]["slug"], d["size_slug"]) for d in droplets] == [
            ("fallback-8b-0", "nyc2", "gpu-h100x1-80gb")
        ]
        # a later up stays where it landed and keeps the droplet
        again = ops.up(name, said.append)
        assert again["placement"]["index"] == 1
        assert [d["id"] for d in ops.client.droplets.list(enforce_https=False)["droplets"]] == [
            droplets[0]["id"]
        ]
        ops.destroy(name, True, said.append)
        assert ops.client.droplets.list(enforce_https=False)["droplets"] == []


def test_without_a_fallback_the_up_says_why_and_what_to_do(tmp_path: Path) -> None:
    workspace = prepare_api_workspace(tmp_path / "ws")
    name = stack(workspace)
    with fake_digitalocean(H100_NYC2_ONLY) as url, pytest.raises(NoCapacity) as err:
        ProgramOps(workspace, url, TOKEN).up(name, lambda _: None)
    message = str(err.value)
    assert "no capacity for any alternative: tor1 on h100: Size is not available in this region." in message
    assert "add fallbacks" in message


def test_other_failures_are_not_mistaken_for_capacity() -> None:
    assert is_capacity_error("422 unprocessable_entity: Size is not available in this region.")
    assert not is_capacity_error("401 Unable to authenticate you.")
    assert not is_capacity_error("422 name is required")


def test_fallbacks_are_checked_like_the_declaration(tmp_path: Path, catalog: Catalog) -> None:
    from agentcloud.errors import SpecError
    from agentcloud.spec import load_stack

    name = stack(
        tmp_path, fallbacks=[{"region": "nyc2"}, {"region": "mars1"}, {"gpu_type": "l40s", "region": "atl1"}]
    )
    with pytest.raises(SpecError) as err:
        load_stack(tmp_path / f"Pulumi.{name}.yaml", catalog)
    text = str(err.value)
    assert "fallbacks[1].region: unknown region (got 'mars1')" in text
    assert "fallbacks[2].gpu_type: gpu type 'l40s' is not offered in region 'atl1'" in text


def test_plan_prices_fallbacks_and_live_shows_the_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentcloud.cli import main

    name = stack(tmp_path, fallbacks=[{"region": "nyc2"}, {"region": "atl1", "gpu_type": "h200"}])
    path = str(tmp_path / f"Pulumi.{name}.yaml")
    assert main(["plan", path]) == 0
    out = capsys.readouterr().out
    assert (
        "fallback [fallback-8b] 1: nyc2 on h100, $" in out and "fallback [fallback-8b] 2: atl1 on h200" in out
    )
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
    with fake_digitalocean(H100_NYC2_ONLY) as url:
        assert main(["plan", path, "--live", "--api-endpoint", url]) == 0  # a fallback has capacity
        out = capsys.readouterr().out
        assert "live [fallback-8b] NO gpu-h100x1-80gb in tor1" in out
        assert "live [fallback-8b] an up now lands on fallback 1: nyc2 on h100" in out
        plain = stack(tmp_path, name="no-fallback")
        assert main(["plan", str(tmp_path / f"Pulumi.{plain}.yaml"), "--live", "--api-endpoint", url]) == 1


def test_agentcloud_up_applies_a_git_stack_with_its_fallbacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The GitOps path (`agentcloud up STACK`, what the workflow applies with) in a project made by
    `agentcloud init`: the stack file in stacks/, no capacity in its region, landed on its fallback."""
    from agentcloud.cli import main

    monkeypatch.delenv("AGENTCLOUD_PROJECT", raising=False)
    assert main(["init", str(tmp_path / "demo")]) == 0
    name = stack(tmp_path / "demo" / "stacks", name="gitops-8b", fallbacks=[{"region": "nyc2"}])
    monkeypatch.chdir(tmp_path / "demo")
    capsys.readouterr()
    with fake_digitalocean(H100_NYC2_ONLY) as url:
        monkeypatch.setenv("AGENTCLOUD_STACK_OPS", "agentcloud.lifecycle.mocked:from_env")
        monkeypatch.setenv("DIGITALOCEAN_API_ENDPOINT", url)
        monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
        assert main(["up", name]) == 0
    out = capsys.readouterr().out
    assert "no capacity for tor1 on h100 (Size is not available in this region.)" in out
    assert "gitops-8b: up on nyc2 on h100, 1 endpoint(s): 10." in out


SPOT_OVERLAY = """gpu_types:
  h100:
    spot: {size_slug: gpu-h100x1-80gb-spot, hourly_usd: 1.99, regions: [nyc2]}
"""


def test_spot_first_then_on_demand_when_reclaimed_or_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Spot droplets where the catalog has an offer, priced as spot; when DigitalOcean reclaims them and has
    no spot capacity, the next up lands on demand in the same place, and says so."""
    from agentcloud.catalog import load_catalog
    from agentcloud.cli import main

    monkeypatch.delenv("AGENTCLOUD_PROJECT", raising=False)
    assert main(["init", str(tmp_path / "demo")]) == 0
    (tmp_path / "demo" / "presets.yaml").write_text(SPOT_OVERLAY)
    monkeypatch.chdir(tmp_path / "demo")
    name = stack(tmp_path / "demo" / "stacks", name="spot-8b", region="nyc2", spot=True)
    assert main(["plan", name]) == 0
    out = capsys.readouterr().out
    assert "spot $1.99/h per droplet (on demand $4.41/h)" in out
    assert main(["plan", "--json", name]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["plans"][0]["hourly_usd"] < 2.1
    sizes = [*H100_NYC2_ONLY, {"slug": "gpu-h100x1-80gb-spot", "available": True, "regions": ["nyc2"]}]
    with fake_digitalocean(sizes) as url:
        ops = ProgramOps(tmp_path / "demo", url, TOKEN)
        said: list[str] = []
        assert ops.up(name, said.append)["placement"]["where"] == "nyc2 on h100 (spot)"
        (droplet,) = ops.client.droplets.list(enforce_https=False)["droplets"]
        assert droplet["size_slug"] == "gpu-h100x1-80gb-spot"
        # DigitalOcean reclaims it, and has no spot capacity left in nyc2
        ops.client.droplets.destroy(droplet_id=droplet["id"], enforce_https=False)
        sizes[-1]["available"] = False
        ops.placements.clear()  # a recovery up tries spot first again
        landed = ops.up(name, said.append)
        assert landed["placement"]["where"] == "nyc2 on h100"
        assert any("no capacity for nyc2 on h100 (spot) (Size is not available" in m for m in said), said
        (droplet,) = ops.client.droplets.list(enforce_https=False)["droplets"]
        assert droplet["size_slug"] == "gpu-h100x1-80gb"
    assert load_catalog().gpu_types["h100"].spot is not None


def test_spot_where_there_is_no_offer_is_refused(tmp_path: Path, catalog: Catalog) -> None:
    from agentcloud.errors import SpecError
    from agentcloud.spec import load_stack

    name = stack(tmp_path, name="spot-8b", spot=True)
    with pytest.raises(SpecError, match=r"spot: no spot droplets of 'h100' in 'tor1' in the catalog"):
        load_stack(tmp_path / f"Pulumi.{name}.yaml", catalog)


def test_a_gitops_up_keeps_the_live_replica_count_and_never_rewrites_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9: git declares the bounds, the live count is the autoscaler's (it runs up with its count), a
    later GitOps up keeps it, and the stack file in git is never rewritten."""
    from agentcloud.cli import main

    monkeypatch.delenv("AGENTCLOUD_PROJECT", raising=False)
    assert main(["init", str(tmp_path / "demo")]) == 0
    stacks = tmp_path / "demo" / "stacks"
    name = stack(stacks, name="elastic-8b", region="nyc2", scaling={"min_replicas": 1, "max_replicas": 3})
    declared = (stacks / f"Pulumi.{name}.yaml").read_bytes()
    with fake_digitalocean(H100_NYC2_ONLY) as url:
        ops = ProgramOps(tmp_path / "demo", url, TOKEN)

        def running() -> int:
            return len(ops.client.droplets.list(enforce_https=False)["droplets"])

        gitops = {"keep_live": True}  # what `agentcloud up` (the workflow's apply) passes
        assert ops.up(name, lambda _: None, **gitops)["replicas"] == 1 and running() == 1  # where it starts
        assert ops.up(name, lambda _: None, replicas=3)["replicas"] == 3 and running() == 3  # the autoscaler
        assert ops.up(name, lambda _: None, **gitops)["replicas"] == 3 and running() == 3  # GitOps keeps it
        assert ops.up(name, lambda _: None, replicas=7)["replicas"] == 3  # within git's bounds
        assert ops.up(name, lambda _: None, replicas=1)["replicas"] == 1 and running() == 1
    assert (stacks / f"Pulumi.{name}.yaml").read_bytes() == declared


def test_the_program_converges_volumes_and_the_firewall_and_caches_outlive_droplets(tmp_path: Path) -> None:
    """Issue 9's twin: the program's model-cache volumes, their attachments and the firewall are created on
    the API too; scale to zero keeps the volumes; teardown deletes droplets, firewall and VPC, and the caches
    only when asked."""
    from tests.fake_digitalocean import LAST

    workspace = prepare_api_workspace(tmp_path / "ws")
    name = stack(
        workspace, region="nyc2", scaling={"min_replicas": 0, "max_replicas": 2, "scale_to_zero": True}
    )
    with fake_digitalocean(H100_NYC2_ONLY) as url:
        ops = ProgramOps(workspace, url, TOKEN)
        twin = LAST[0]
        ops.up(name, lambda _: None, replicas=2)
        assert len(twin.droplets) == 2 and len(twin.volumes) == 2  # a cache volume per replica slot
        assert all(len(v["droplet_ids"]) == 1 for v in twin.volumes.values())  # each attached to its droplet
        (firewall,) = twin.firewalls.values()
        assert sorted(firewall["droplet_ids"]) == sorted(twin.droplets)
        engine_rule = next(r for r in firewall["inbound_rules"] if r["ports"] == "8000")
        assert engine_rule["sources"]["tags"] == ["agentcloud-gateway"]  # the engine port: the gateway only
        ops.up(name, lambda _: None, replicas=0)  # scale to zero
        assert twin.droplets == {} and len(twin.volumes) == 2  # the caches outlive their droplets
        assert all(v["droplet_ids"] == [] for v in twin.volumes.values())
        ops.up(name, lambda _: None, replicas=1)  # wake: the same cache comes back
        assert len(twin.volumes) == 2 and sum(len(v["droplet_ids"]) for v in twin.volumes.values()) == 1
        ops.destroy(name, True, lambda _: None)
        assert twin.droplets == {} and twin.firewalls == {} and twin.vpcs == {} and len(twin.volumes) == 2
        ops.destroy(name, False, lambda _: None)
        assert twin.volumes == {}

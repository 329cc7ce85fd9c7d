"""The gateway's stack: spec validation, cloud-init, and the component under Pulumi mocks."""

from __future__ import annotations

import pulumi
import pytest
import yaml

from agentcloud.gateway_stack import GatewaySpec, user_data
from tests.conftest import STACKS
from tests.pulumi_mocks import RecordingMocks, pulumi_test


def _shipped() -> GatewaySpec:
    raw = yaml.safe_load((STACKS / "Pulumi.gateway.yaml").read_text())["config"]["agent-cloud:gateway"]
    return GatewaySpec.model_validate(raw)


def test_spec_validation() -> None:
    spec = _shipped()
    assert spec.replicas == 1 and spec.store is None and spec.domain == "api.example.com"
    assert GatewaySpec(region="atl1", replicas=3).store is not None
    with pytest.raises(ValueError, match="unknown region"):
        GatewaySpec(region="mars1")
    with pytest.raises(ValueError, match="whole internet"):
        GatewaySpec(region="nyc2", ssh={"allowed_cidrs": ["0.0.0.0/0"]})  # type: ignore[arg-type]


def test_cloud_init_installs_and_waits_for_secrets() -> None:
    text = user_data(_shipped())
    doc = yaml.safe_load(text)
    assert text.startswith("#cloud-config\n")
    assert [
        "/opt/agentcloud/venv/bin/pip",
        "install",
        "--quiet",
        "agentcloud @ git+https://github.com/your-org/agentcloud",
    ] in doc["runcmd"]
    unit = next(f["content"] for f in doc["write_files"] if f["path"].endswith("agentcloud-gateway.service"))
    assert "ExecStart=/opt/agentcloud/venv/bin/agentcloud gateway serve --host 0.0.0.0 --port 8080" in unit
    assert "EnvironmentFile=/etc/agentcloud/gateway.env" in unit and "User=agentcloud" in unit
    assert "PEPPER" not in text and "postgresql://" not in text


def settled(host) -> pulumi.Output:  # type: ignore[no-untyped-def,type-arg]
    ids = [d.id for d in host.droplets] + [host.load_balancer.id, host.firewall.id]
    if host.postgres is not None:
        ids += [host.postgres.id, host.redis.id]
    return pulumi.Output.all(*ids)


@pulumi_test
def test_single_replica_behind_tls_load_balancer(mocks: RecordingMocks):  # type: ignore[no-untyped-def]
    from agentcloud.components.gateway_host import GatewayHost, GatewayHostArgs

    host = GatewayHost("gateway", GatewayHostArgs(spec=_shipped()))

    def check(_: object) -> None:
        (lb,) = mocks.of_type("digitalocean:index/loadBalancer:LoadBalancer")
        ports = sorted((r["entryPort"], r["entryProtocol"]) for r in lb.inputs["forwardingRules"])
        assert ports == [(80, "http"), (443, "https")] and lb.inputs["redirectHttpToHttps"] is True
        assert lb.inputs["healthcheck"]["path"] == "/health"
        (cert,) = mocks.of_type("digitalocean:index/certificate:Certificate")
        assert cert.inputs["type"] == "lets_encrypt" and cert.inputs["domains"] == ["api.example.com"]
        (fw,) = mocks.of_type("digitalocean:index/firewall:Firewall")
        rules = {r["portRange"]: r for r in fw.inputs["inboundRules"]}
        assert set(rules) == {"8080", "22"}, (
            "only the load balancer reaches the gateway; SSH from the listed CIDRs"
        )
        assert "sourceAddresses" not in rules["8080"] and rules["8080"]["sourceLoadBalancerUids"]
        (droplet,) = mocks.of_type("digitalocean:index/droplet:Droplet")
        assert "agentcloud-gateway" in droplet.inputs["tags"] and droplet.inputs["size"] == "s-2vcpu-4gb"
        assert mocks.of_type("digitalocean:index/databaseCluster:DatabaseCluster") == []

    return settled(host).apply(check)


@pulumi_test
def test_replicas_share_managed_postgres_and_valkey(mocks: RecordingMocks):  # type: ignore[no-untyped-def]
    from agentcloud.components.gateway_host import GatewayHost, GatewayHostArgs

    host = GatewayHost("gateway", GatewayHostArgs(spec=GatewaySpec(region="atl1", replicas=3)))

    def check(_: object) -> None:
        assert len(mocks.of_type("digitalocean:index/droplet:Droplet")) == 3
        engines = sorted(
            c.inputs["engine"] for c in mocks.of_type("digitalocean:index/databaseCluster:DatabaseCluster")
        )
        assert engines == ["pg", "valkey"]
        (lb,) = mocks.of_type("digitalocean:index/loadBalancer:LoadBalancer")
        assert [r["entryPort"] for r in lb.inputs["forwardingRules"]] == [80] and len(
            lb.inputs["dropletIds"]
        ) == 3

    return settled(host).apply(check)

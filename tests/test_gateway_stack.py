"""The gateway's stack: spec validation, cloud-init, and the component under Pulumi mocks."""

from __future__ import annotations

from pathlib import Path

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
    spaces = "s3://agentcloud-state?endpoint=nyc3.digitaloceanspaces.com"
    assert GatewaySpec(region="atl1", replicas=3, state_backend=spaces).store is not None
    # issue 9: two replicas on two file:// backends would keep two states
    with pytest.raises(ValueError, match="would keep 2 separate stack states"):
        GatewaySpec(region="atl1", replicas=2)
    with pytest.raises(ValueError, match="set state_backend to a shared backend"):
        GatewaySpec(region="atl1", replicas=2, state_backend="file:///var/lib/agentcloud/state")
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

    spaces = "s3://agentcloud-state?endpoint=nyc3.digitaloceanspaces.com"
    host = GatewayHost(
        "gateway", GatewayHostArgs(spec=GatewaySpec(region="atl1", replicas=3, state_backend=spaces))
    )

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


def test_the_gateway_droplet_can_run_the_control_plane() -> None:
    """Issue 9: the service user has no home and the unit is ProtectSystem=strict, so every path the gateway
    and Pulumi write is under the data directory; the Pulumi CLI is installed, pinned; the state backend is
    the spec's (a directory on the droplet for one replica)."""
    from importlib.metadata import version

    spec = _shipped()
    doc = yaml.safe_load(user_data(spec))
    unit = next(f["content"] for f in doc["write_files"] if f["path"].endswith("agentcloud-gateway.service"))
    for line in (
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/agentcloud",
        "Environment=AGENTCLOUD_DATA_DIR=/var/lib/agentcloud",
        "Environment=HOME=/var/lib/agentcloud",
        "Environment=PULUMI_HOME=/var/lib/agentcloud/.pulumi",
        "Environment=PULUMI_BACKEND_URL=file:///var/lib/agentcloud/pulumi-state",
        "Environment=PATH=/opt/pulumi/bin:",
    ):
        assert line in unit, line
    install = next(c for c in doc["runcmd"] if isinstance(c, str) and "get.pulumi.com" in c)
    assert f"--version {version('pulumi')} --install-root /opt/pulumi" in install and install.endswith(
        "|| exit 1"
    )


def test_gateway_paths_need_no_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With AGENTCLOUD_DATA_DIR set and HOME pointing nowhere writable, nothing the gateway writes is under
    HOME: the store, the journal, uploads, the API stacks' workspace and their Pulumi state."""
    from agentcloud.gateway.config import GatewayConfig
    from agentcloud.lifecycle.operations import default_backend

    monkeypatch.setenv("HOME", "/nonexistent")
    monkeypatch.setenv("AGENTCLOUD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    for name in ("DATABASE", "JOURNAL_DIR", "UPLOAD_DIR", "STACKS_DIR"):
        monkeypatch.delenv(f"AGENTCLOUD_{name}", raising=False)
    config = GatewayConfig.from_env()
    paths = [config.database, config.journal_dir, config.upload_dir, config.stacks_dir, default_backend()]
    assert all(str(tmp_path) in str(p) and "/nonexistent" not in str(p) for p in paths), paths

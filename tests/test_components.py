"""The Pulumi components under pulumi.runtime.set_mocks: what they would create, and how it is wired."""

from __future__ import annotations

from typing import Any

import pulumi

from agentcloud.catalog import Catalog
from agentcloud.planner import plan
from agentcloud.spec import DeploymentSpec, Network, Ssh
from tests.conftest import STACKS
from tests.pulumi_mocks import RecordingMocks, pulumi_test

DROPLET = "digitalocean:index/droplet:Droplet"
VOLUME = "digitalocean:index/volume:Volume"
ATTACH = "digitalocean:index/volumeAttachment:VolumeAttachment"
FIREWALL = "digitalocean:index/firewall:Firewall"
VPC = "digitalocean:index/vpc:Vpc"


def _spec(**kw: object) -> DeploymentSpec:
    base: dict[str, object] = dict(
        name="prod-inference",
        model_id="llama-3.3-70b-instruct",
        gpu_type="mi300x",
        region="atl1",
        preset="balanced",
        replicas=2,
        ssh=Ssh(allowed_cidrs=("203.0.113.0/24",), keys=("ab:cd",)),
    )
    base.update(kw)
    return DeploymentSpec(**base)  # type: ignore[arg-type]


def settled(dep) -> pulumi.Output:  # type: ignore[no-untyped-def,type-arg]
    """An output that resolves once every resource of the deployment has been registered."""
    ids = [d.id for d in dep.droplets] + [v.id for v in dep.cache.volumes] + [a.id for a in dep.attachments]
    return pulumi.Output.all(*ids, dep.firewall.firewall.id, dep.host_key.id)


def _deploy(catalog: Catalog, spec: DeploymentSpec):  # type: ignore[no-untyped-def]
    from agentcloud.components.gpu_deployment import GpuDeployment, GpuDeploymentArgs

    return GpuDeployment(spec.name, GpuDeploymentArgs(plan=plan(spec, catalog)))


@pulumi_test
def test_droplets_match_the_plan(mocks: RecordingMocks, catalog: Catalog) -> Any:
    dep = _deploy(catalog, _spec())

    def check(_: object) -> None:
        droplets = sorted(mocks.of_type(DROPLET), key=lambda d: d.inputs["name"])  # registration order varies
        assert len(droplets) == 2
        for i, d in enumerate(droplets):
            assert d.inputs["name"] == f"prod-inference-{i}"
            assert d.inputs["size"] == "gpu-mi300x1-192gb"
            assert d.inputs["region"] == "atl1"
            assert d.inputs["image"] == "gpu-amd-base"
            assert d.inputs["sshKeys"] == ["ab:cd"]
            assert "agentcloud-engine" in d.inputs["tags"]
            assert "agentcloud:deployment:prod-inference" in d.inputs["tags"]
            assert d.inputs["vpcUuid"]  # inside a VPC, never the default network by accident
            user_data = d.inputs["userData"]
            assert user_data.startswith("#cloud-config\n")
            assert "vllm/vllm-openai-rocm:v0.33.0" in user_data
            assert "ssh-ed25519 AAAAmock" in user_data
            assert "HF_TOKEN=" not in user_data and "VLLM_API_KEY=" not in user_data

    return settled(dep).apply(check)


@pulumi_test
def test_firewall_admits_only_gateway_and_ssh_cidrs(mocks: RecordingMocks, catalog: Catalog) -> Any:
    dep = _deploy(catalog, _spec())

    def check(droplet_ids: list[str]) -> None:
        (fw,) = mocks.of_type(FIREWALL)
        rules = fw.inputs["inboundRules"]
        engine = [r for r in rules if r["portRange"] == "8000"]
        ssh = [r for r in rules if r["portRange"] == "22"]
        assert len(engine) == 1 and engine[0]["sourceTags"] == ["agentcloud-gateway"]
        assert "sourceAddresses" not in engine[0]  # closed to the world
        assert ssh[0]["sourceAddresses"] == ["203.0.113.0/24"] and ssh[0]["sourceTags"] == [
            "agentcloud-gateway"
        ]
        for rule in rules:
            assert not set(rule.get("sourceAddresses", [])) & {"0.0.0.0/0", "::/0"}
        assert sorted(fw.inputs["dropletIds"]) == sorted(int(i) for i in droplet_ids)
        assert fw.inputs["outboundRules"], "a firewall without outbound rules blocks all egress"

    n = len(dep.droplets)
    return settled(dep).apply(lambda r: check(r[:n]))


@pulumi_test
def test_ssh_only_from_the_gateway_without_cidrs(mocks: RecordingMocks, catalog: Catalog) -> Any:
    dep = _deploy(catalog, _spec(ssh=Ssh(), replicas=1))

    def check(_: object) -> None:
        (fw,) = mocks.of_type(FIREWALL)
        rules = {r["portRange"]: r for r in fw.inputs["inboundRules"]}
        assert set(rules) == {"8000", "22"}
        assert rules["22"]["sourceTags"] == ["agentcloud-gateway"] and "sourceAddresses" not in rules["22"]

    return settled(dep).apply(check)


@pulumi_test
def test_cache_volumes_attached_and_protected(mocks: RecordingMocks, catalog: Catalog) -> Any:
    from agentcloud.spec import Scaling

    spec = _spec(scaling=Scaling(min_replicas=0, max_replicas=3, scale_to_zero=True), replicas=2)
    dep = _deploy(catalog, spec)

    def check(all_ids: list[str]) -> None:
        droplet_ids, volume_ids = all_ids[:2], all_ids[2:5]
        volumes = mocks.of_type(VOLUME)
        attachments = mocks.of_type(ATTACH)
        assert len(volumes) == 3, "one volume per replica slot up to max_replicas"
        assert all(
            v.inputs["region"] == "atl1" and v.inputs["initialFilesystemLabel"] == "agentcloud-mdl"
            for v in volumes
        )
        assert all(v.inputs["size"] == 170 for v in volumes)
        assert all(v._protect for v in dep.cache.volumes)  # only an explicit teardown may delete weights
        pairs = sorted((a.inputs["dropletId"], a.inputs["volumeId"]) for a in attachments)
        assert pairs == sorted(zip((int(i) for i in droplet_ids), volume_ids[:2], strict=True))

    return settled(dep).apply(check)


@pulumi_test
def test_scale_to_zero_keeps_volumes(mocks: RecordingMocks, catalog: Catalog) -> Any:
    from agentcloud.spec import Scaling

    dep = _deploy(
        catalog, _spec(replicas=0, scaling=Scaling(min_replicas=0, max_replicas=2, scale_to_zero=True))
    )

    def check(_: object) -> None:
        assert mocks.of_type(DROPLET) == []
        assert len(mocks.of_type(VOLUME)) == 2

    return settled(dep).apply(check)


@pulumi_test
def test_existing_vpc_is_joined(mocks: RecordingMocks, catalog: Catalog) -> Any:
    dep = _deploy(catalog, _spec(replicas=1, network=Network(vpc_uuid="vpc-123")))

    def check(_: object) -> None:
        assert mocks.of_type(VPC) == []
        assert mocks.of_type(DROPLET)[0].inputs["vpcUuid"] == "vpc-123"

    return settled(dep).apply(check)


@pulumi_test
def test_outputs(mocks: RecordingMocks, catalog: Catalog) -> Any:
    dep = _deploy(catalog, _spec())

    def check(endpoints: list[dict[str, object]]) -> None:
        assert len(endpoints) == 2
        for e in endpoints:
            assert e["port"] == 8000
            assert str(e["private_ip"]).startswith("10.10.0.")
            assert str(e["public_ip"]).startswith("198.51.100.")
            assert int(str(e["droplet_id"])) >= 1000

    return pulumi.Output.all(dep.endpoints, settled(dep)).apply(lambda r: check(r[0]))


@pulumi_test
def test_program_reads_stack_config(mocks: RecordingMocks):  # type: ignore[no-untyped-def]
    import json

    import yaml

    from agentcloud.program import run

    deployment = yaml.safe_load((STACKS / "Pulumi.cost-70b.yaml").read_text())["config"][
        "agent-cloud:deployment"
    ]
    pulumi.runtime.set_mocks(mocks, project="agent-cloud", stack="cost-70b", preview=False)
    pulumi.runtime.set_all_config({"agent-cloud:deployment": json.dumps(deployment)})
    dep = run()

    def check(_: object) -> None:
        (droplet,) = mocks.of_type(DROPLET)
        assert droplet.inputs["size"] == "gpu-mi300x1-192gb" and droplet.inputs["region"] == "atl1"
        assert "quantization: fp8_per_tensor" in droplet.inputs["userData"]
        assert len(mocks.of_type(VOLUME)) == 2  # max_replicas 2

    return settled(dep).apply(check)


DEDICATED = "digitalocean:index/dedicatedInference:DedicatedInference"


@pulumi_test
def test_dedicated_inference_backend_declares_no_droplet(mocks: RecordingMocks):  # type: ignore[no-untyped-def]
    """Issue 14: `backend: dedicated-inference` in a stack file, through the program users run: one
    DedicatedInference with the plan's accelerator slug and scale, in a VPC, and no droplet or volume."""
    import json

    from agentcloud.program import run

    deployment = {
        "name": "managed-70b",
        "model_id": "llama-3.3-70b-instruct",
        "gpu_type": "h200",
        "precision": "fp8",
        "region": "nyc2",
        "preset": "balanced",
        "replicas": 2,
        "backend": "dedicated-inference",
    }
    pulumi.runtime.set_mocks(mocks, project="agent-cloud", stack="managed-70b", preview=False)
    pulumi.runtime.set_all_config({"agent-cloud:deployment": json.dumps(deployment)})
    dep = run()

    def check(_: object) -> None:
        (service,) = mocks.of_type(DEDICATED)
        (model,) = service.inputs["modelDeployments"]
        assert model["modelProvider"] == "hugging_face"
        assert model["providerModelId"] == "meta-llama/Llama-3.3-70B-Instruct"
        assert model["accelerators"] == [
            {"acceleratorSlug": "gpu-h200x1-141gb", "scale": 2, "type": "nvidia_h200"}
        ]
        assert service.inputs["region"] == "nyc2" and service.inputs["enablePublicEndpoint"] is False
        assert len(mocks.of_type(VPC)) == 1
        assert mocks.of_type(DROPLET) == [] and mocks.of_type(VOLUME) == [] and mocks.of_type(FIREWALL) == []

    return dep.service.id.apply(check)  # type: ignore[attr-defined]


def test_dedicated_inference_is_refused_where_it_cannot_serve(catalog: Catalog) -> None:
    import pytest

    from agentcloud.document import Document
    from agentcloud.errors import SpecError
    from agentcloud.spec import DEPLOYMENT_KEY, parse_stack

    def problems(**kw: object) -> str:
        raw: dict[str, object] = {
            "name": "managed",
            "model_id": "llama-3.1-8b-instruct",
            "region": "nyc2",
            "preset": "latency",
        }
        raw.update(kw, backend="dedicated-inference")
        with pytest.raises(SpecError) as err:
            parse_stack(Document(file="s.yaml", data={"config": {DEPLOYMENT_KEY: raw}}), catalog)
        return str(err.value)

    assert "Dedicated Inference is not offered in 'ams3'" in problems(region="ams3", gpu_type="h100")
    gguf = next(name for name, m in catalog.models.items() if m.is_gguf)
    assert "Hugging Face checkpoints only" in problems(model_id=gguf, preset="speed")


def test_a_dedicated_inference_stack_routes_through_the_gateway() -> None:
    """Its outputs give the gateway one route: the service's private endpoint, no SSH hosts."""
    from agentcloud.control.outputs import routes_from_outputs

    outputs: dict[str, Any] = {
        "endpoint": "abc123.private.inference.do-ai.run",
        "plan": {"model_id": "llama-3.3-70b-instruct", "backend": "dedicated-inference", "gpu_type": "h200"},
    }
    routes = routes_from_outputs(outputs, "DI_TOKEN")
    assert routes["endpoints"] == ["https://abc123.private.inference.do-ai.run/v1"]
    assert routes["hosts"] == [] and routes["api_key_env"] == "DI_TOKEN"
    droplets = routes_from_outputs({**outputs, "plan": {**outputs["plan"], "backend": "droplets"}}, None)
    assert droplets["endpoints"] == []  # a droplet stack's routes come from its droplets' endpoints only

"""GpuDeployment: `replicas` GPU droplets serving one planned model, with cache volumes and a firewall."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as do

from agentcloud.components.host_key import HostKey
from agentcloud.components.network import EngineFirewall, EngineFirewallArgs, deployment_vpc
from agentcloud.components.volume import ModelCache, ModelCacheArgs
from agentcloud.planner import ServingPlan
from agentcloud.render import VOLUME_LABEL, render
from agentcloud.render import HostKey as HostKeyPair

ENGINE_TAG = "agentcloud-engine"


def tag(value: str) -> str:
    """DigitalOcean tags allow letters, digits, ':', '-' and '_'."""
    return re.sub(r"[^A-Za-z0-9:_-]", "_", value)[:255]


def deployment_tags(plan: ServingPlan) -> tuple[str, ...]:
    return (
        "agentcloud",
        ENGINE_TAG,
        tag(f"agentcloud:deployment:{plan.name}"),
        tag(f"agentcloud:model:{plan.model_id}"),
        tag(f"agentcloud:preset:{plan.preset_name}"),
    )


@dataclass(frozen=True)
class GpuDeploymentArgs:
    """Inputs of one deployment stack: the plan and its network."""

    plan: ServingPlan
    keep_model_cache: bool = True


class GpuDeployment(pulumi.ComponentResource):
    """One deployment: GPU droplets from the plan, their cloud-init, cache volumes and firewall."""

    TYPE = "agentcloud:deployment:GpuDeployment"

    def __init__(
        self, name: str, args: GpuDeploymentArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        plan = args.plan
        child = pulumi.ResourceOptions(parent=self)
        tags = deployment_tags(plan)

        vpc_id = deployment_vpc(name, plan.name, plan.region, plan.network.vpc_uuid, child)

        self.host_key = HostKey(f"{name}-host-key", comment=f"agentcloud {plan.name}", opts=child)
        user_data = pulumi.Output.all(self.host_key.private_openssh, self.host_key.public_openssh).apply(
            lambda keys: render(plan, HostKeyPair(private_openssh=keys[0], public_openssh=keys[1])).user_data
        )
        self.cache = ModelCache(
            f"{name}-cache",
            ModelCacheArgs(
                deployment=plan.name,
                region=plan.region,
                size_gib=plan.cache_disk_gib,
                count=plan.cache_volumes,
                label=VOLUME_LABEL,
                tags=tags,
                protect=args.keep_model_cache,
            ),
            opts=child,
        )

        self.droplets: list[do.Droplet] = []
        self.attachments: list[do.VolumeAttachment] = []
        for i in range(plan.replicas):
            droplet = do.Droplet(
                f"{name}-{i}",
                name=f"{plan.name}-{i}",
                size=plan.size_slug,
                region=plan.region,
                image=plan.droplet_image,
                vpc_uuid=vpc_id,
                ssh_keys=list(plan.ssh.keys),
                user_data=user_data,
                tags=list(tags),
                monitoring=True,
                ipv6=False,
                graceful_shutdown=True,
                # The cache volume can attach to one droplet at a time: the old one must go first.
                opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
            )
            self.attachments.append(
                do.VolumeAttachment(
                    f"{name}-{i}-cache",
                    droplet_id=droplet.id.apply(int),
                    volume_id=self.cache.volumes[i].id,
                    opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
                )
            )
            self.droplets.append(droplet)

        self.firewall = EngineFirewall(
            f"{name}-firewall",
            EngineFirewallArgs(
                deployment=plan.name,
                droplet_ids=[d.id.apply(int) for d in self.droplets],
                engine_port=plan.engine_port,
                gateway_tag=plan.network.gateway_tag,
                gateway_cidrs=plan.network.gateway_cidrs,
                ssh_cidrs=plan.ssh.allowed_cidrs,
            ),
            opts=child,
        )

        self.endpoints = pulumi.Output.all(
            *[pulumi.Output.all(d.ipv4_address_private, d.ipv4_address, d.id) for d in self.droplets]
        ).apply(
            lambda rows: [
                {"private_ip": r[0], "public_ip": r[1], "droplet_id": r[2], "port": plan.engine_port}
                for r in rows
            ]
        )
        self.register_outputs(
            {
                "endpoints": self.endpoints,
                "droplet_ids": [d.id for d in self.droplets],
                "hourly_usd": plan.hourly_usd,
                "host_public_key": self.host_key.public_openssh,
            }
        )

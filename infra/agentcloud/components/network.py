"""The deployment's network: its VPC, and its firewall (the engine port only for the gateway, SSH only for
configured CIDRs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as do

WORLD = ["0.0.0.0/0", "::/0"]


def deployment_vpc(
    name: str,
    deployment: str,
    region: str,
    vpc_uuid: str | None,
    opts: pulumi.ResourceOptions,
    what: str = "",
) -> pulumi.Input[str]:
    """The VPC a deployment's machines join: ``vpc_uuid`` when given (the gateway's, say), else its own."""
    if vpc_uuid:
        return vpc_uuid
    return do.Vpc(
        f"{name}-vpc",
        name=f"agentcloud-{deployment}",
        region=region,
        description=f"agentcloud deployment {deployment}{what}",
        opts=opts,
    ).id


@dataclass(frozen=True)
class EngineFirewallArgs:
    """Who may reach the engines: the gateway's tag, SSH sources."""

    deployment: str
    droplet_ids: Sequence[pulumi.Input[int]]
    engine_port: int
    gateway_tag: str
    gateway_cidrs: Sequence[str]
    ssh_cidrs: Sequence[str]


class EngineFirewall(pulumi.ComponentResource):
    """The engine port open to the gateway tag only; SSH never from the world."""

    TYPE = "agentcloud:network:EngineFirewall"

    def __init__(
        self, name: str, args: EngineFirewallArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # The gateway stack tags its droplets; a shared tag is never deleted by a deployment's destroy.
        gateway_tag = do.Tag(
            f"{name}-gateway-tag",
            name=args.gateway_tag,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        inbound = [
            do.FirewallInboundRuleArgs(
                protocol="tcp",
                port_range=str(args.engine_port),
                source_tags=[gateway_tag.name],
                source_addresses=list(args.gateway_cidrs) or None,
            )
        ]
        # SSH: the gateway (it delivers models and secrets) and the operators' CIDRs, never the world.
        inbound.append(
            do.FirewallInboundRuleArgs(
                protocol="tcp",
                port_range="22",
                source_tags=[gateway_tag.name],
                source_addresses=list(args.ssh_cidrs) or None,
            )
        )
        outbound = [
            do.FirewallOutboundRuleArgs(protocol="tcp", port_range="1-65535", destination_addresses=WORLD),
            do.FirewallOutboundRuleArgs(protocol="udp", port_range="1-65535", destination_addresses=WORLD),
            do.FirewallOutboundRuleArgs(protocol="icmp", destination_addresses=WORLD),
        ]
        self.firewall = do.Firewall(
            f"{name}-fw",
            name=f"agentcloud-{args.deployment}",
            droplet_ids=list(args.droplet_ids),
            inbound_rules=inbound,
            outbound_rules=outbound,
            opts=child,
        )
        self.register_outputs({"firewall_id": self.firewall.id})

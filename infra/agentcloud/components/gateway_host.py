"""GatewayHost: the gateway on CPU droplets behind a DigitalOcean load balancer (TLS with a managed
certificate), firewalled so only the load balancer reaches the gateway port; managed PostgreSQL and Valkey
when replicas > 1."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as do

from agentcloud.components.host_key import HostKey
from agentcloud.components.network import WORLD
from agentcloud.gateway_stack import GatewaySpec, user_data
from agentcloud.render import HostKey as HostKeyPair


@dataclass(frozen=True)
class GatewayHostArgs:
    """Inputs of the gateway stack's component."""

    spec: GatewaySpec


class GatewayHost(pulumi.ComponentResource):
    """The gateway's droplets, load balancer with managed TLS, firewall, and (with replicas) managed
    PostgreSQL and Valkey."""

    TYPE = "agentcloud:gateway:GatewayHost"

    def __init__(self, name: str, args: GatewayHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, opts)
        spec = args.spec
        child = pulumi.ResourceOptions(parent=self)
        vpc_id: pulumi.Input[str] = (
            spec.vpc_uuid
            or do.Vpc(f"{name}-vpc", name=f"agentcloud-{spec.name}", region=spec.region, opts=child).id
        )
        tag = do.Tag(f"{name}-tag", name=spec.tag, opts=child)
        self.host_key = HostKey(f"{name}-host-key", comment=f"agentcloud {spec.name}", opts=child)
        ud = pulumi.Output.all(self.host_key.private_openssh, self.host_key.public_openssh).apply(
            lambda k: user_data(spec, HostKeyPair(k[0], k[1]))
        )
        self.droplets = [
            do.Droplet(
                f"{name}-{i}",
                name=f"{spec.name}-{i}",
                size=spec.size,
                image=spec.image,
                region=spec.region,
                vpc_uuid=vpc_id,
                ssh_keys=list(spec.ssh.keys),
                user_data=ud,
                tags=["agentcloud", tag.name],
                monitoring=True,
                graceful_shutdown=True,
                opts=child,
            )
            for i in range(spec.replicas)
        ]
        rules = [
            do.LoadBalancerForwardingRuleArgs(
                entry_port=80, entry_protocol="http", target_port=spec.port, target_protocol="http"
            )
        ]
        self.certificate = None
        if spec.domain:
            self.certificate = do.Certificate(
                f"{name}-cert",
                name=f"agentcloud-{spec.name}",
                type="lets_encrypt",
                domains=[spec.domain],
                opts=child,
            )
            rules.append(
                do.LoadBalancerForwardingRuleArgs(
                    entry_port=443,
                    entry_protocol="https",
                    target_port=spec.port,
                    target_protocol="http",
                    certificate_name=self.certificate.name,
                )
            )
        self.load_balancer = do.LoadBalancer(
            f"{name}-lb",
            name=f"agentcloud-{spec.name}",
            region=spec.region,
            vpc_uuid=vpc_id,
            droplet_ids=[d.id.apply(int) for d in self.droplets],
            forwarding_rules=rules,
            healthcheck=do.LoadBalancerHealthcheckArgs(
                protocol="http", port=spec.port, path="/health", check_interval_seconds=5, healthy_threshold=2
            ),
            redirect_http_to_https=bool(spec.domain),
            http_idle_timeout_seconds=600,  # long streams
            opts=child,
        )
        inbound = [
            do.FirewallInboundRuleArgs(
                protocol="tcp", port_range=str(spec.port), source_load_balancer_uids=[self.load_balancer.id]
            )
        ]
        if spec.ssh.allowed_cidrs:
            inbound.append(
                do.FirewallInboundRuleArgs(
                    protocol="tcp", port_range="22", source_addresses=list(spec.ssh.allowed_cidrs)
                )
            )
        self.firewall = do.Firewall(
            f"{name}-fw",
            name=f"agentcloud-{spec.name}",
            droplet_ids=[d.id.apply(int) for d in self.droplets],
            inbound_rules=inbound,
            outbound_rules=[
                do.FirewallOutboundRuleArgs(
                    protocol="tcp", port_range="1-65535", destination_addresses=WORLD
                ),
                do.FirewallOutboundRuleArgs(
                    protocol="udp", port_range="1-65535", destination_addresses=WORLD
                ),
                do.FirewallOutboundRuleArgs(protocol="icmp", destination_addresses=WORLD),
            ],
            opts=child,
        )
        self.postgres = self.redis = None
        if spec.store is not None:
            self.postgres = do.DatabaseCluster(
                f"{name}-pg",
                name=f"agentcloud-{spec.name}-pg",
                engine="pg",
                version="16",
                size=spec.store.postgres_size,
                region=spec.region,
                node_count=1,
                private_network_uuid=vpc_id,
                opts=child,
            )
            self.redis = do.DatabaseCluster(
                f"{name}-redis",
                name=f"agentcloud-{spec.name}-valkey",
                engine="valkey",
                version="8",
                size=spec.store.redis_size,
                region=spec.region,
                node_count=1,
                private_network_uuid=vpc_id,
                opts=child,
            )
            for db, label in ((self.postgres, "pg"), (self.redis, "redis")):
                do.DatabaseFirewall(
                    f"{name}-{label}-fw",
                    cluster_id=db.id,
                    rules=[do.DatabaseFirewallRuleArgs(type="tag", value=spec.tag)],
                    opts=child,
                )
        scheme = "https" if spec.domain else "http"
        self.url = (
            pulumi.Output.from_input(f"https://{spec.domain}")
            if spec.domain
            else self.load_balancer.ip.apply(lambda ip: f"{scheme}://{ip}")
        )
        self.register_outputs({"url": self.url, "droplet_ids": [d.id for d in self.droplets]})

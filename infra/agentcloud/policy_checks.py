"""Guardrails for every stack, as pure functions over resource types and properties. The pulumi-policy pack in
policy/ calls them (constructing a PolicyPack starts a server, so tests call these directly).

- no SSH from the world; nothing but 80/443 open to the world (engine ports never public);
- GPU droplets tagged `agentcloud` and inside a VPC;
- a $/h ceiling per stack, from presets.yaml prices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

WORLD = {"0.0.0.0/0", "::/0"}
PUBLIC_PORTS = {"80", "443"}
FIREWALL = "digitalocean:index/firewall:Firewall"
DROPLET = "digitalocean:index/droplet:Droplet"


def _get(props: Mapping[str, Any], *names: str) -> Any:
    for name in names:  # policy packs see camelCase, some tools snake_case
        if name in props:
            return props[name]
    return None


def firewall_violations(props: Mapping[str, Any]) -> list[str]:
    found = []
    for rule in _get(props, "inboundRules", "inbound_rules") or []:
        sources = set(_get(rule, "sourceAddresses", "source_addresses") or [])
        port = str(_get(rule, "portRange", "port_range") or "all")
        if sources & WORLD and port == "22":
            found.append("SSH (22) is open to the whole internet; list the operators' CIDRs instead")
        elif sources & WORLD and port not in PUBLIC_PORTS:
            found.append(
                f"port {port} is open to the whole internet; engine ports must admit only the gateway"
            )
    return found


def droplet_violations(props: Mapping[str, Any]) -> list[str]:
    size = str(_get(props, "size") or "")
    if not size.startswith("gpu-"):
        return []
    found = []
    if "agentcloud" not in (_get(props, "tags") or []):
        found.append(f"GPU droplet ({size}) is not tagged 'agentcloud'")
    if not _get(props, "vpcUuid", "vpc_uuid"):
        found.append(f"GPU droplet ({size}) is not placed in a VPC")
    return found


def hourly_cost(droplets: Iterable[Mapping[str, Any]], prices: Mapping[str, float]) -> float:
    """$/h of the stack's droplets at the catalog's prices (unknown sizes count 0 and are reported apart)."""
    return round(sum(prices.get(str(_get(d, "size") or ""), 0.0) for d in droplets), 2)


def cost_violation(
    droplets: Iterable[Mapping[str, Any]], prices: Mapping[str, float], ceiling: float | None
) -> str | None:
    if ceiling is None:
        return None
    cost = hourly_cost(droplets, prices)
    return (
        f"droplets cost ${cost:.2f}/h, above this stack's ceiling of ${ceiling:.2f}/h"
        if cost > ceiling
        else None
    )


def catalog_prices() -> dict[str, float]:
    from agentcloud.catalog import load_catalog

    return {g.size_slug: g.hourly_usd for g in load_catalog().gpu_types.values()}

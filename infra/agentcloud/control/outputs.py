"""A deployment stack's outputs as the routes the data plane serves it by (pure)."""

from __future__ import annotations

from typing import Any


def routes_from_outputs(outputs: dict[str, Any], engine_key_env: str | None) -> dict[str, Any]:
    """The engines' private addresses (the gateway sits in the VPC; the engine port is firewalled to it), the
    served model, the SSH hosts with the pinned host key (model delivery), the SLA's concurrency limit."""
    plan = outputs.get("plan") or {}
    endpoints = [
        f"http://{e['private_ip']}:{e['port']}/v1"
        for e in outputs.get("endpoints") or []
        if e.get("private_ip")
    ]
    if plan.get("backend") == "dedicated-inference" and outputs.get("endpoint"):
        # DigitalOcean's managed service: its private endpoint in the VPC, OpenAI-compatible over HTTPS; the
        # engine key is one of its access tokens (docs/catalog.md)
        endpoints = [f"https://{outputs['endpoint']}/v1"]
    hosts = [
        {
            "host": e["private_ip"],
            "host_public_key": outputs.get("host_public_key"),
            "port": e.get("ssh_port", 22),
        }
        for e in outputs.get("endpoints") or []
        if e.get("private_ip") and outputs.get("host_public_key")
    ]
    routes: dict[str, Any] = {
        "endpoints": endpoints,
        "model_id": plan.get("model_id"),
        "hosts": hosts,
        "gpu_type": plan.get("gpu_type"),
        "preset": plan.get("preset"),
    }
    if plan.get("engine"):
        routes["engine"] = plan["engine"]
    if plan.get("routing"):
        routes["routing"] = plan["routing"]
    if plan.get("concurrency_limit"):
        routes["concurrency_limit"] = plan["concurrency_limit"]
    if engine_key_env:
        routes["api_key_env"] = engine_key_env
    return routes

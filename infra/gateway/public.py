"""Catalog, metrics and access-control routes."""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Any

from infra.catalog import Model
from infra.gateway import authz
from infra.gateway.asgi import Request
from infra.gateway.errors import bad_request, not_found, unauthorized

if TYPE_CHECKING:
    from infra.gateway.app import Gateway


def _card(gw: Gateway, model_id: str, model: Model | None) -> dict[str, Any]:
    providers = gw.catalog.providers_for(model_id)
    card: dict[str, Any] = {"id": model_id, "object": "model", "owned_by": "agentcloud", "created": 0}
    if model is not None:
        card.update(
            display_name=model.display_name,
            task=model.task.value,
            tier=model.tier,
            context_window=model.context_window,
            capabilities=[model.task.value] + (["dedicated"] if model.deployable else []),
            dedicated=model.deployable,
            providers=[name for name, _ in providers],
            pricing={
                name: {"usd_per_mtok_in": p.models[model_id].usd_per_mtok_in,
                       "usd_per_mtok_out": p.models[model_id].usd_per_mtok_out}
                for name, p in providers
            },
        )  # fmt: skip
    return card


def _visible(gw: Gateway, plan: str | None) -> list[dict[str, Any]]:
    rank = gw.catalog.plans[plan].rank if plan in gw.catalog.plans else None
    out = []
    for model_id in gw.routes.models.keys() | gw.catalog.models.keys():
        model = gw.catalog.models.get(model_id)
        if rank is not None and model is not None and gw.catalog.plans[model.tier].rank > rank:
            continue
        out.append(_card(gw, model_id, model))
    return sorted(out, key=lambda c: str(c["id"]))


async def models(gw: Gateway, req: Request) -> None:
    await gw.authenticate(req)
    await req.json({"object": "list", "data": _visible(gw, None)})


async def models_available(gw: Gateway, req: Request) -> None:
    key = await gw.authenticate(req)
    data = [] if key.kind == "scoped" else _visible(gw, key.plan)
    await req.json({"object": "list", "plan": key.plan, "data": data})


async def inference_metrics(gw: Gateway, req: Request) -> None:
    key = await gw.authenticate(req)
    usage = await gw.db(gw.store.usage_totals, key.org_id)
    latency = {
        name: s.snapshot() for name, s in gw.metrics.models.items() if name in usage or key.kind == "admin"
    }
    await req.json({"object": "inference.metrics", "org_id": key.org_id, "usage": usage, "models": latency})


async def deployment_metrics(gw: Gateway, req: Request) -> None:
    key = await gw.authenticate(req)
    dep_id = req.params["deployment_id"]
    dep = authz.read_deployment(key, gw.routes.deployments.get(dep_id), dep_id)
    series = gw.metrics.deployments.get(dep.id)
    snapshot = series.snapshot() if series else {}
    snapshot["active_concurrency"] = (
        await gw.concurrency.in_flight(dep.id) if dep.concurrency_limit else (series.active if series else 0)
    )
    await req.json({"object": "deployment.metrics", "deployment_id": dep.id, "model_id": dep.model_id,
                    "status": dep.status, **snapshot, "sla_breaches": gw.sla_breaches(dep.id)})  # fmt: skip


async def prometheus(gw: Gateway, req: Request) -> None:
    if gw.config.metrics_token:
        token = (req.header(b"authorization") or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(token.encode(), gw.config.metrics_token.encode()):
            raise unauthorized("metrics need the configured metrics token")
    await req.respond(200, gw.metrics.prometheus().encode(), b"text/plain; version=0.0.4")


async def grant(gw: Gateway, req: Request) -> None:
    key = await gw.authenticate(req)
    dep_id = req.params["deployment_id"]
    dep = authz.manage_deployment(key, gw.routes.deployments.get(dep_id), dep_id)
    body = await req.json_object(gw.config.max_body_bytes)
    api_key_id, role = body.get("api_key_id"), body.get("role", "inference")
    if not isinstance(api_key_id, str) or not api_key_id:
        raise bad_request("api_key_id: required, a string", param="api_key_id")
    if role != "inference":
        raise bad_request("role: only 'inference' is supported", param="role")
    if await gw.db(gw.store.key_by_id, api_key_id) is None:
        raise not_found(f"API key {api_key_id} not found", code="api_key_not_found")
    await gw.db(gw.store.grant, dep.id, api_key_id, role)
    gw.invalidate_keys()
    await req.json({"deployment_id": dep.id, "api_key_id": api_key_id, "role": role}, status=201)


async def revoke(gw: Gateway, req: Request) -> None:
    key = await gw.authenticate(req)
    dep_id, api_key_id = req.params["deployment_id"], req.params["api_key_id"]
    dep = authz.manage_deployment(key, gw.routes.deployments.get(dep_id), dep_id)
    if not await gw.db(gw.store.revoke_grant, dep.id, api_key_id):
        raise not_found(f"API key {api_key_id} has no grant on {dep.id}", code="grant_not_found")
    gw.invalidate_keys()
    await req.json({"deployment_id": dep.id, "api_key_id": api_key_id, "deleted": True})


async def health(gw: Gateway, req: Request) -> None:
    await req.json({"status": "ok"})


async def create_webhook(gw: Gateway, req: Request) -> None:
    import secrets

    from infra.gateway.keys import new_id
    from infra.gateway.webhooks import EVENTS, UnsafeURL, check_url, seal

    key = await gw.authenticate(req)
    dep_id = req.params["deployment_id"]
    dep = authz.manage_deployment(key, gw.routes.deployments.get(dep_id), dep_id)
    body = await req.json_object(gw.config.max_body_bytes)
    url, events = body.get("url"), body.get("events", list(EVENTS))
    if not isinstance(url, str) or len(url) > 2048:
        raise bad_request("url: required, a string", param="url")
    if (
        not isinstance(events, list)
        or not events
        or not set(events) <= set(EVENTS)
        or len(set(events)) != len(events)
    ):
        raise bad_request(f"events: a list of distinct events among {', '.join(EVENTS)}", param="events")
    try:
        await asyncio.to_thread(check_url, url, gw.webhooks.policy)
    except UnsafeURL as exc:
        raise bad_request(f"url refused: {exc}", param="url", code="unsafe_url") from None
    secret = secrets.token_hex(32)
    hook_id = new_id("whk")
    await gw.db(
        gw.store.create_webhook, hook_id, dep.org_id, dep.id, url, events, seal(gw.config.pepper, secret)
    )
    await req.json({"id": hook_id, "deployment_id": dep.id, "url": url, "events": events, "secret": secret,
                    "signature_header": "X-AINative-Signature"}, status=201)  # fmt: skip

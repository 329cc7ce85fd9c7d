"""Every route of the gateway, in one table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infra.gateway import inference, public, services

if TYPE_CHECKING:
    from infra.gateway.app import Gateway, Handler, Router
    from infra.gateway.asgi import Request

API = "/api/v1/public"


def register(router: Router) -> None:
    add = router.add
    for path in (f"{API}/chat/completions", "/v1/chat/completions"):
        add("POST", path, inference.chat)
    add("POST", f"{API}/deployments/{{deployment_id}}/chat/completions", inference.chat_deployment)
    add("POST", f"{API}/orgs/{{org_id}}/deployments/{{deployment_id}}/chat/completions", inference.chat_org)
    for path in ("/v1/messages", f"{API}/messages"):
        add("POST", path, inference.messages, anthropic=True)
    for path in (f"{API}/embeddings/generate", "/v1/embeddings"):
        add("POST", path, services.embeddings)
    for path in (f"{API}/rerank", "/v1/rerank"):
        add("POST", path, services.rerank)
    for path in (f"{API}/audio/transcriptions", "/v1/audio/transcriptions"):
        add("POST", path, services.transcriptions)
    add("POST", f"{API}/audio/tts", services.tts)
    add("GET", f"{API}/models", public.models)
    add("GET", f"{API}/models/available", public.models_available)
    add("GET", "/v1/models", public.models_available)
    add("GET", f"{API}/inference/metrics", public.inference_metrics)
    add("GET", f"{API}/deployments/{{deployment_id}}/metrics", public.deployment_metrics)
    add("POST", f"{API}/deployments/{{deployment_id}}/permissions", public.grant)
    add("DELETE", f"{API}/deployments/{{deployment_id}}/permissions/{{api_key_id}}", public.revoke)
    add("POST", f"{API}/deployments/{{deployment_id}}/webhooks", public.create_webhook)
    for method, path, action in (
        ("POST", f"{API}/deployments", "create"),
        ("GET", f"{API}/deployments", "list"),
        ("GET", f"{API}/deployments/{{deployment_id}}", "get"),
        ("DELETE", f"{API}/deployments/{{deployment_id}}", "delete"),
        ("PATCH", f"{API}/deployments/{{deployment_id}}/scaling", "scaling"),
        ("POST", f"{API}/deployments/{{deployment_id}}/refresh", "refresh"),
        ("PATCH", f"{API}/deployments/{{deployment_id}}/sla", "set_sla"),
        ("GET", f"{API}/deployments/{{deployment_id}}/sla", "get_sla"),
    ):
        add(method, path, _api_route(action))
    add("POST", f"{API}/models/upload", lambda gw, req: gw.uploads.multipart(req))
    add("POST", f"{API}/models/uploads", lambda gw, req: gw.uploads.create(req))
    for method, action in (("PATCH", "append"), ("GET", "status"), ("HEAD", "status"), ("DELETE", "cancel")):
        add(method, f"{API}/models/uploads/{{upload_id}}", _upload_route(action))
    add("GET", "/metrics", public.prometheus)
    add("GET", "/health", public.health)


def _upload_route(action: str) -> Handler:
    async def handle(gw: Gateway, req: Request) -> None:
        await getattr(gw.uploads, action)(req)

    return handle


def _api_route(action: str) -> Handler:
    async def handle(gw: Gateway, req: Request) -> None:
        await getattr(gw.deployments_api, action)(req)

    return handle

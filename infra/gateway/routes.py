"""The data plane's routes, in one table: inference (metered), catalog and metrics."""

from __future__ import annotations

import functools

from infra.gateway import inference, public, services
from infra.gateway.inference import Serving
from infra.gateway.public import Observing
from infra.gateway.router import Router

API = "/api/v1/public"


def register(router: Router, serving: Serving, observing: Observing) -> None:
    def metered(method: str, path: str, handler: inference.ServingHandler, anthropic: bool = False) -> None:
        router.add(method, path, functools.partial(handler, serving), metered=True, anthropic=anthropic)

    for path in (f"{API}/chat/completions", "/v1/chat/completions"):
        metered("POST", path, inference.chat)
    metered("POST", f"{API}/deployments/{{deployment_id}}/chat/completions", inference.chat_deployment)
    metered(
        "POST", f"{API}/orgs/{{org_id}}/deployments/{{deployment_id}}/chat/completions", inference.chat_org
    )
    for path in ("/v1/messages", f"{API}/messages"):
        metered("POST", path, inference.messages, anthropic=True)
    for path in (f"{API}/embeddings/generate", "/v1/embeddings"):
        metered("POST", path, services.embeddings)
    metered("POST", f"{API}/deployments/{{deployment_id}}/embeddings", services.embeddings_deployment)
    for path in (f"{API}/rerank", "/v1/rerank"):
        metered("POST", path, services.rerank)
    for path in (f"{API}/audio/transcriptions", "/v1/audio/transcriptions"):
        metered("POST", path, services.transcriptions)
    metered("POST", f"{API}/audio/tts", services.tts)

    def observe(path: str, handler: public.ObservingHandler, auth: bool = True) -> None:
        router.add("GET", path, functools.partial(handler, observing), auth=auth)

    observe(f"{API}/models", public.models)
    observe(f"{API}/models/available", public.models_available)
    observe("/v1/models", public.models_available)
    observe(f"{API}/inference/metrics", public.inference_metrics)
    observe(f"{API}/deployments/{{deployment_id}}/metrics", public.deployment_metrics)
    observe(f"{API}/deployments/{{deployment_id}}/models", public.deployment_models)
    observe("/metrics", public.prometheus, auth=False)  # its own token (AGENTCLOUD_METRICS_TOKEN)

"""The data plane's routes, in one table: inference (metered), catalog and metrics."""

from __future__ import annotations

import functools
from typing import Any

from agentcloud.gateway import inference, public, services
from agentcloud.gateway import schemas as s
from agentcloud.gateway.inference import Serving
from agentcloud.gateway.public import Observing
from agentcloud.gateway.router import Router

API = "/api/v1/public"


def register(router: Router, serving: Serving, observing: Observing) -> None:
    def metered(
        method: str,
        path: str,
        handler: inference.ServingHandler,
        body: Any,
        summary: str,
        anthropic: bool = False,
    ) -> None:
        router.add(
            method,
            path,
            functools.partial(handler, serving),
            metered=True,
            anthropic=anthropic,
            body=body,
            summary=summary,
        )

    chat = "Chat completions (OpenAI format), streamed or not"
    for path in (f"{API}/chat/completions", "/v1/chat/completions"):
        metered("POST", path, inference.chat, s.ChatRequest, chat)
    metered(
        "POST",
        f"{API}/deployments/{{deployment_id}}/chat/completions",
        inference.chat_deployment,
        s.ChatRequest,
        "Chat completions from one dedicated deployment",
    )
    metered(
        "POST",
        f"{API}/orgs/{{org_id}}/deployments/{{deployment_id}}/chat/completions",
        inference.chat_org,
        s.ChatRequest,
        "Chat completions from a deployment of an org the key is a member of",
    )
    for path in ("/v1/messages", f"{API}/messages"):
        metered("POST", path, inference.messages, s.MessagesRequest, "Messages (Anthropic format)", True)
    for path in (f"{API}/embeddings/generate", "/v1/embeddings"):
        metered("POST", path, services.embeddings, s.EmbeddingsRequest, "Embeddings")
    metered(
        "POST",
        f"{API}/deployments/{{deployment_id}}/embeddings",
        services.embeddings_deployment,
        s.EmbeddingsRequest,
        "Embeddings from a dedicated deployment of an embedding model",
    )
    for path in (f"{API}/rerank", "/v1/rerank"):
        metered("POST", path, services.rerank, s.RerankRequest, "Rerank documents against a query")
    for path in (f"{API}/audio/transcriptions", "/v1/audio/transcriptions"):
        metered("POST", path, services.transcriptions, s.TRANSCRIPTION_FORM, "Speech to text")
    metered("POST", f"{API}/audio/tts", services.tts, s.SpeechRequest, "Text to speech (MP3)")

    def observe(path: str, handler: public.ObservingHandler, summary: str, auth: bool = True) -> None:
        router.add("GET", path, functools.partial(handler, observing), auth=auth, summary=summary)

    observe(f"{API}/models", public.models, "Every model of the catalog")
    observe(f"{API}/models/available", public.models_available, "The models this key can call now")
    observe("/v1/models", public.models_available, "The models this key can call now (OpenAI format)")
    observe(f"{API}/inference/metrics", public.inference_metrics, "Usage and latency of the key's org")
    observe(
        f"{API}/deployments/{{deployment_id}}/metrics", public.deployment_metrics, "A deployment's metrics"
    )
    observe(
        f"{API}/deployments/{{deployment_id}}/models",
        public.deployment_models,
        "The model a deployment serves (OpenAI format)",
    )
    # its own bearer token (AGENTCLOUD_METRICS_TOKEN), not an API key
    observe("/metrics", public.prometheus, "Prometheus exposition", auth=False)

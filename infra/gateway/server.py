"""Run the gateway with uvicorn (uvloop event loop, httptools parser)."""

from __future__ import annotations

import logging

from infra.catalog import ApiFormat, load_catalog
from infra.gateway.app import Gateway
from infra.gateway.config import GatewayConfig
from infra.gateway.routing import Target, from_catalog, load_routes


def build(
    config: GatewayConfig, upstream: str | None = None, upstream_models: list[str] | None = None
) -> Gateway:
    """A gateway; ``upstream`` adds an OpenAI-compatible server (e.g. a local llama.cpp) for ``upstream_models``,
    tried before any provider."""
    from pathlib import Path

    catalog = load_catalog(config.catalog)
    routes = from_catalog(catalog)
    if config.routes_file:
        load_routes(routes, Path(config.routes_file))
    for model in upstream_models or []:
        if upstream:
            target = Target(name=f"local:{model}", base_url=upstream.rstrip("/"), format=ApiFormat.OPENAI,
                            upstream_model=model, api_key=None)  # fmt: skip
            routes.models[model] = [target, *routes.models.get(model, [])]
    return Gateway(config, catalog=catalog, routes=routes)


def serve(gateway: Gateway, host: str, port: int) -> None:
    import uvicorn

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        gateway,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        log_level="warning",
        timeout_keep_alive=75,
        backlog=4096,
    )

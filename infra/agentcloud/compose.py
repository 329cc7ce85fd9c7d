"""The composition root: wires the data plane and the control plane for one process.

`build(config, planes)` gives the ASGI application of a process that runs the data plane, the control plane,
or both (the default, on one machine). The planes share state only through the store; in one process the
control plane also tells the data plane of each change at once. The real side effects (Pulumi's Automation
API, SFTP delivery) are chosen here and handed in as ports; tests hand in their own."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from agentcloud import version
from agentcloud.catalog import ApiFormat, Catalog, load_catalog
from agentcloud.control.deployments import StackOps
from agentcloud.control.plane import ControlPlane
from agentcloud.control.uploads import Deliver
from agentcloud.errors import InfraError
from agentcloud.gateway.app import DataPlane, Gateway, Plane
from agentcloud.gateway.config import GatewayConfig
from agentcloud.gateway.router import Router
from agentcloud.gateway.routing import RouteTable, from_catalog, load_routes
from agentcloud.lifecycle.operations import prepare_api_workspace
from agentcloud.records import DeploymentRecord
from agentcloud.store import Store
from agentcloud.upstream.target import Target

PLANES = ("data", "control")


def routes_for(
    config: GatewayConfig,
    catalog: Catalog,
    upstream: str | None = None,
    upstream_models: Iterable[str] = (),
    upstream_key: str | None = None,
) -> RouteTable:
    """The catalog's providers, the routes file's upstreams, and ``upstream`` (e.g. a local llama.cpp) for
    ``upstream_models``, tried before any provider."""
    routes = from_catalog(catalog)
    if config.routes_file:
        load_routes(routes, Path(config.routes_file))
    for model in upstream_models:
        if upstream:
            target = Target(
                name=f"local:{model}",
                base_url=upstream.rstrip("/"),
                format=ApiFormat.OPENAI,
                upstream_model=model,
                api_key=upstream_key,
            )
            routes.models[model] = [target, *routes.models.get(model, [])]
    return routes


def stack_ops_from(spec: str | None, workspace: Path) -> StackOps:
    """Pulumi's Automation API by default; ``module:factory`` (AGENTCLOUD_STACK_OPS) names another, for
    example `agentcloud.lifecycle.mocked:from_env` (the program against a v2 API at DIGITALOCEAN_API_ENDPOINT)
    or a stand-in cloud in tests. A factory that takes an argument gets the Pulumi project folder."""
    if not spec:
        from agentcloud.lifecycle.operations import PulumiStackOps

        return PulumiStackOps(work_dir=workspace)
    module, _, name = spec.partition(":")
    try:
        factory: Any = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise InfraError(f"AGENTCLOUD_STACK_OPS={spec}: cannot load it ({exc}); use module:factory") from None
    import inspect

    ops: StackOps = factory(workspace) if inspect.signature(factory).parameters else factory()
    return ops


def build(
    config: GatewayConfig,
    planes: Iterable[str] = PLANES,
    *,
    catalog: Catalog | None = None,
    store: Store | None = None,
    routes: RouteTable | None = None,
    stack_ops: StackOps | None = None,
    stacks_dir: Path | None = None,
    deliver: Deliver | None = None,
) -> Gateway:
    """The ASGI application of one process running ``planes`` (any of "data" and "control")."""
    wanted = set(planes)
    unknown = wanted - set(PLANES)
    if unknown or not wanted:
        raise InfraError(f"planes: {sorted(unknown) or 'none'} given; choose data, control or both")
    catalog = catalog or load_catalog(config.catalog)
    store = store or Store(config.database)
    routes = routes or routes_for(config, catalog)
    data = DataPlane(config, catalog, store, routes)
    router = Router()
    running: list[Plane] = [data]
    if "data" in wanted:
        data.register(router)
    control = None
    if "control" in wanted:
        if deliver is None:
            from agentcloud.control.delivery import deliver as sftp_deliver

            deliver = sftp_deliver
        if stacks_dir is None:
            stacks_dir = prepare_api_workspace(Path(config.stacks_dir))

        async def publish(record: DeploymentRecord | None) -> None:
            await data.sync.apply(record)

        control = ControlPlane(
            config,
            catalog,
            store,
            routes,
            stack_ops or stack_ops_from(config.stack_ops, stacks_dir),
            stacks_dir,
            deliver,
            publish,
        )
        control.register(router)
        running.append(control)
    router.add("GET", "/health", _health, auth=False, summary="Liveness (no key)")
    _describe(router)
    _console(router)
    return Gateway(router, data, running, control)


async def _health(req: Any) -> None:
    await req.json({"status": "ok"})


def _describe(router: Router) -> None:
    """/openapi.json, /docs and / : the contract of every route this process serves (built once, when the
    first asks: by then every plane has registered its routes)."""
    from agentcloud.gateway import openapi

    built: dict[str, Any] = {}

    def doc() -> dict[str, Any]:
        if not built:
            built["doc"] = openapi.document(router, version())
            built["json"] = orjson.dumps(built["doc"])
            built["html"] = openapi.page(built["doc"]).encode()
        return built

    async def contract(req: Any) -> None:
        await req.respond(200, doc()["json"])

    async def docs(req: Any) -> None:
        await req.respond(200, doc()["html"], b"text/html; charset=utf-8")

    async def index(req: Any) -> None:
        await req.json({"name": "agentcloud gateway", "docs": "/docs", "openapi": "/openapi.json"})

    router.add("GET", "/openapi.json", contract, auth=False, summary="This document (OpenAPI 3.1)")
    router.add("GET", "/docs", docs, auth=False, summary="This document, for people (HTML)")
    router.add("GET", "/", index, auth=False, summary="Where the documentation is")


CONSOLE = Path(__file__).resolve().parent / "gateway" / "console"
CONSOLE_FILES = {
    "/console": ("index.html", b"text/html; charset=utf-8"),
    "/console/console.js": ("console.js", b"text/javascript; charset=utf-8"),
    "/console/console.css": ("console.css", b"text/css; charset=utf-8"),
}


def _console(router: Router) -> None:
    """The console: three static files (package data) that call the API with the key the admin enters."""
    for path, (name, content_type) in CONSOLE_FILES.items():
        body = (CONSOLE / name).read_bytes()

        async def static(req: Any, body: bytes = body, content_type: bytes = content_type) -> None:
            await req.respond(200, body, content_type, [(b"cache-control", b"no-cache")])

        router.add("GET", path, static, auth=False, summary=f"The console ({name})")

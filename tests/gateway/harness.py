"""A real gateway under uvicorn on 127.0.0.1 (in a thread) with a store, orgs, keys and routes for tests."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from infra.catalog import ApiFormat, Catalog
from infra.compose import build
from infra.gateway.app import Gateway
from infra.gateway.config import GatewayConfig
from infra.gateway.routing import Deployment, RouteTable
from infra.records import DeploymentRecord
from infra.store import Store
from infra.upstream.target import Target
from tests.sshd import free_port

PEPPER = b"test-pepper-0123456789abcdef"
CHAT_MODEL = "llama-3.1-8b-instruct"
T = TypeVar("T")


def target(
    base_url: str,
    name: str = "fake",
    upstream_model: str | None = None,
    deployment_id: str | None = None,
    fmt: ApiFormat = ApiFormat.OPENAI,
) -> Target:
    return Target(
        name=name,
        base_url=base_url,
        format=fmt,
        upstream_model=upstream_model or CHAT_MODEL,
        api_key="upstream-secret",
        usd_per_mtok_in=1.0,
        usd_per_mtok_out=2.0,
        deployment_id=deployment_id,
    )


def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Bounded wait for the gateway's bookkeeping, which finishes just after the client has its answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@dataclass
class Keys:
    admin: str
    standard: str
    basic: str
    scoped: str
    scoped_other: str
    other_org: str
    member: str
    member_read_only: str
    revoked: str
    expired: str
    ids: dict[str, str]


def seed(store: Store, requests_per_minute: int | None = None) -> Keys:
    """Two orgs, deployments dep_a (org_a) and dep_b (org_b), and one key of every kind (with an optional
    requests/min override, for tests that are not about limits)."""
    store.reset()
    store.create_org("Org A", org_id="org_a")
    store.create_org("Org B", org_id="org_b")
    ids: dict[str, str] = {}
    tokens: dict[str, str] = {}

    def make(name: str, org: str, plan: str = "free", kind: str = "standard", **kw: Any) -> None:
        kw.setdefault("requests_per_minute", requests_per_minute)
        ids[name], tokens[name] = store.create_key(PEPPER, org, name, plan, kind, **kw)

    make("admin", "org_a", "professional", "admin")
    make("standard", "org_a")
    make("basic", "org_a", "basic")
    make("scoped", "org_a", kind="scoped")
    make("scoped_other", "org_a", kind="scoped")
    make("other_org", "org_b", "professional")
    make("member", "org_b")
    make("member_read_only", "org_b")
    make("revoked", "org_a")
    make("expired", "org_a", expires_at=time.time() - 10)
    store.revoke_key(ids["revoked"])
    store.grant("dep_a", ids["scoped"])
    store.add_member("org_a", ids["member"], ["deployment:invoke"])
    store.add_member("org_a", ids["member_read_only"], ["deployment:read"])
    return Keys(ids=ids, **tokens)


def routes_for(upstream_url: str, concurrency_limit: int | None = None) -> RouteTable:
    table = RouteTable()
    table.models[CHAT_MODEL] = [target(upstream_url)]
    for model in (
        "bge-m3",
        "bge-reranker-v2-m3",
        "whisper-large-v3-turbo",
        "minimax-speech-02-hd",
        "gemma-3-27b-it",
    ):
        table.models[model] = [target(upstream_url, upstream_model=model)]
    for dep_id, org in (("dep_a", "org_a"), ("dep_b", "org_b")):
        table.add_deployment(
            Deployment(
                dep_id,
                org,
                dep_id,
                CHAT_MODEL,
                (target(upstream_url, dep_id, deployment_id=dep_id),),
                concurrency_limit=concurrency_limit,
            )
        )
    return table


@dataclass
class Running:
    gateway: Gateway
    url: str
    server: uvicorn.Server

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 15) -> T:
        """Run a coroutine on the gateway's own event loop (from the test's thread)."""
        assert self.gateway.loop is not None, "gateway not started"
        return asyncio.run_coroutine_threadsafe(coro, self.gateway.loop).result(timeout_s)

    def openai(self, key: str, **kw: Any) -> Any:
        import openai

        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=kw.pop("timeout", 15), **kw
        )

    def anthropic(self, key: str) -> Any:
        import anthropic

        return anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, timeout=15)


@contextmanager
def running(gateway: Gateway) -> Iterator[Running]:
    port = free_port()
    config = uvicorn.Config(
        gateway,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    try:
        yield Running(gateway, f"http://127.0.0.1:{port}", server)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def record_of(dep: Deployment) -> DeploymentRecord:
    """A deployment as `agentcloud gateway routes add` registers it: a record in the store, routes only."""
    routes: dict[str, Any] = {
        "endpoints": [t.base_url for t in dep.targets],
        "concurrency_limit": dep.concurrency_limit,
        "gpu_type": dep.gpu_type,
        "preset": dep.preset,
        "hosts": [dataclasses.asdict(h) for h in dep.hosts],
    }
    if dep.targets:
        t = dep.targets[0]
        routes.update(
            api_key=t.api_key,
            upstream_model=t.upstream_model,
            format=t.format.value,
            usd_per_mtok_in=t.usd_per_mtok_in,
            usd_per_mtok_out=t.usd_per_mtok_out,
        )
    routes["routing"] = dep.routing.value
    return DeploymentRecord(dep.id, dep.org_id, dep.name, dep.model_id, dep.status, routes=routes)


def make_gateway(
    catalog: Catalog,
    store: Store,
    routes: RouteTable,
    tmp: Path | None = None,
    planes: tuple[str, ...] = ("data", "control"),
    stack_ops: Any = None,
    stacks_dir: Path | None = None,
    **config: Any,
) -> Gateway:
    """Both planes in one process (the default) over ``store``; the table's deployments are registered in the
    store, as `routes add` does, so they reach the data plane the way real ones do."""
    # uploads go to the test's own folder, never to the user's data directory
    config.setdefault(
        "upload_dir", str(tmp / "uploads") if tmp else tempfile.mkdtemp(prefix="agentcloud-uploads-")
    )
    for dep in routes.deployments.values():
        store.save_deployment(record_of(dep))
    cfg = GatewayConfig(database=":memory:", pepper=PEPPER, usage_flush_s=0.05, **config)
    return build(
        cfg,
        planes,
        catalog=catalog,
        store=store,
        routes=routes,
        stack_ops=stack_ops,
        stacks_dir=stacks_dir
        or (tmp / "stacks" if tmp else Path(tempfile.mkdtemp(prefix="agentcloud-stacks-"))),
    )

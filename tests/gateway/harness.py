"""A real gateway under uvicorn on 127.0.0.1 (in a thread) with a store, orgs, keys and routes for tests."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
import uvicorn

from agentcloud.catalog import ApiFormat, Catalog
from agentcloud.compose import build
from agentcloud.gateway.app import Gateway
from agentcloud.gateway.config import GatewayConfig
from agentcloud.gateway.routing import Deployment, RouteTable, SshHost
from agentcloud.gateway.server import limits_of, server_config
from agentcloud.records import DeploymentRecord
from agentcloud.store import Store
from agentcloud.upstream.target import Target
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
    """Serve the gateway as `agentcloud gateway serve` does (the same protocol, bounds and settings)."""
    port = free_port()
    config = server_config(gateway, "127.0.0.1", port, limits_of(gateway.config))
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
    config.setdefault(
        "journal_dir", str(tmp / "journal") if tmp else tempfile.mkdtemp(prefix="agentcloud-journal-")
    )
    for dep in routes.deployments.values():
        store.save_deployment(record_of(dep))
    config.setdefault("usage_flush_s", 0.05)
    cfg = GatewayConfig(database=":memory:", pepper=PEPPER, **config)
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


ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1/public"


@dataclass
class GatewayProcess:
    """A gateway in its own process: its URL and the process (a test may kill it)."""

    url: str
    proc: subprocess.Popen[bytes]


@contextmanager
def gateway_process(
    plane: str, env: dict[str, str], logs: Path, args: tuple[str, ...] = ()
) -> Iterator[GatewayProcess]:
    """`agentcloud gateway serve --plane PLANE` in its own process, once /health answers."""
    port = free_port()
    log_path = logs / f"{plane}-{port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentcloud.cli",
            "gateway",
            "serve",
            "--plane",
            plane,
            "--port",
            str(port),
            *args,
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{url}/health", timeout=1).status_code == 200
        except requests.ConnectionError:
            return proc.poll() is not None  # died: stop waiting, fail below

    try:
        assert wait_for(up, 30) and proc.poll() is None, log_path.read_text()[-3000:]
        yield GatewayProcess(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@dataclass
class World:
    """The gateway under test and what the matrix acts on: org_a's dep_a (registered by hand), dep_m (made
    through the API: it has a stack), dep_u (a bring-your-own-model deployment with a droplet to deliver
    to) and dep_e (an embedding model); org_b's dep_b."""

    r: Running
    keys: Keys
    tokens: dict[str, str]
    dep_m: str
    names: Iterator[int] = field(default_factory=lambda: itertools.count())

    def call(self, method: str, path: str, token: str | None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        headers.update(kw.pop("headers", {}))
        return requests.request(method, self.r.url + path, headers=headers, timeout=15, **kw)

    def admin(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.call(method, path, self.keys.admin, **kw)

    def settled(self) -> None:
        """Wait until dep_m has no stack operation running (the next operation would get 409)."""
        assert wait_for(lambda: self.admin("GET", f"{API}/deployments/{self.dep_m}").json()["job"] is None)

    def upload(self) -> str:
        made = self.admin(
            "POST",
            f"{API}/models/uploads",
            json={"name": f"m{next(self.names)}", "deployment_id": "dep_u", "size": 64},
        )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])


@contextmanager
def world_of(catalog: Catalog, tmp: Path, **config: Any) -> Iterator[World]:
    """A gateway with both planes and every kind of object to act on (see World)."""
    from tests.gateway.fake_upstream import fake_upstream
    from tests.gateway.stand_in_ops import SPEC, FakeOps

    stacks = tmp / "stacks"
    stacks.mkdir()
    store = Store(":memory:")
    keys = seed(store, requests_per_minute=1_000_000)  # access, not limits
    _, admin_b = store.create_key(PEPPER, "org_b", "admin_b", "professional", "admin")
    byom = Deployment(
        "dep_u",
        "org_a",
        "dep_u",
        "byom:none",
        (),
        gpu_type="l40s",
        hosts=(SshHost("127.0.0.1", "ssh-ed25519 AAAA", 22),),
    )
    store.save_deployment(record_of(byom))
    with fake_upstream() as up:
        ops = FakeOps(int(up.base_url.split(":")[2].split("/")[0]), stacks)
        routes = routes_for(up.base_url)
        routes.add_deployment(  # dep_e: org_a's dedicated embedding model
            Deployment(
                "dep_e", "org_a", "dep_e", "bge-m3", (target(up.base_url, "dep_e", deployment_id="dep_e"),)
            )
        )
        gateway = make_gateway(  # webhooks to 127.0.0.1 only: nothing leaves the machine
            catalog,
            store,
            routes,
            tmp,
            stack_ops=ops,
            stacks_dir=stacks,
            webhooks_allow_http=True,
            webhooks_allow_loopback=True,
            **config,
        )
        with running(gateway) as r:
            tokens = {f.name: getattr(keys, f.name) for f in dataclasses.fields(keys) if f.name != "ids"}
            tokens["admin_b"] = admin_b
            made = requests.post(
                f"{r.url}{API}/deployments",
                json=SPEC,
                headers={"Authorization": f"Bearer {keys.admin}"},
                timeout=15,
            )
            assert made.status_code == 202, made.text
            w = World(r, keys, tokens, made.json()["id"])
            w.settled()
            yield w
    store.close()

"""The control plane: changes deployments. Jobs (one per stack across every process), the autoscaler and wake
loop, SLA monitors, the webhook sender and model delivery; its side effects go through ports handed in at
composition (stack operations, delivery over SSH, `publish` to an in-process data plane).

It shares state with data planes only through the store; its routes sit behind the same middleware
(authentication) as the data plane's."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agentcloud.catalog import Catalog
from agentcloud.control.api import GitStackBody, ManagementApi, RoutingBody
from agentcloud.control.autoscaler import Autoscaler
from agentcloud.control.deployments import Deployments, Publish, StackOps
from agentcloud.control.jobs import JobRunner
from agentcloud.control.secrets_push import pusher
from agentcloud.control.sla import SlaWatch
from agentcloud.control.uploads import Deliver, Uploads
from agentcloud.control.webhooks import Policy, WebhookSender
from agentcloud.gateway.app import cancel
from agentcloud.gateway.config import GatewayConfig
from agentcloud.gateway.router import Router
from agentcloud.gateway.routing import RouteTable
from agentcloud.gateway.schemas import (
    MODEL_UPLOAD_FORM,
    UPLOAD_CHUNK,
    GrantRequest,
    UploadRequest,
    WebhookRequest,
)
from agentcloud.spec import DeploymentSpec, Scaling, Sla
from agentcloud.store import Store
from agentcloud.store.offload import StoreThread
from agentcloud.upstream.http_client import HttpPool
from agentcloud.upstream.proxy import wait_healthy

log = logging.getLogger("agentcloud.control")
API = "/api/v1/public"


class ControlPlane:
    """Everything that changes deployments, for one process; background loops run under store leases."""

    def __init__(
        self,
        config: GatewayConfig,
        catalog: Catalog,
        store: Store,
        routes: RouteTable,
        stack_ops: StackOps,
        stacks_dir: Path,
        deliver: Deliver,
        publish: Publish,
    ) -> None:
        self.config, self.store = config, store
        self.holder = f"control-{secrets.token_hex(4)}"
        self.db = StoreThread("control")
        self.pool: HttpPool | None = None
        self.webhooks = WebhookSender(
            store,
            self.db,
            config.pepper,
            Policy(config.webhooks_allow_http, config.webhooks_allow_loopback),
            config.webhook_backoff_s,
            config.webhook_tick_s,
        )
        self.jobs = JobRunner(store, self.db)
        self.sla = SlaWatch(store, self.db, self.webhooks)
        self.deployments = Deployments(
            store,
            self.db,
            catalog,
            self.jobs,
            stack_ops,
            stacks_dir,
            self.webhooks,
            self.sla,
            self.healthy,
            publish,
        )
        self.deployments.push_secrets = pusher(config)
        self.autoscaler = Autoscaler(
            store, self.db, self.deployments, self.jobs, self.sla, config.autoscale_interval_s
        )
        delivery = config.delivery
        if config.ssh_key and delivery.identity_file is None:
            delivery = dataclasses.replace(delivery, identity_file=config.ssh_key)
        self.uploads = Uploads(
            store,
            self.db,
            catalog,
            routes,
            self.deployments,
            self.healthy,
            deliver,
            Path(config.upload_dir),
            config.max_model_bytes,
            config.max_body_bytes,
            delivery,
        )
        self.deployments.redeliver = self.uploads.redeliver
        self.api = ManagementApi(
            self.deployments,
            routes,
            catalog,
            store,
            self.db,
            self.sla,
            self.webhooks,
            config.pepper,
            config.max_body_bytes,
        )
        self.background: list[asyncio.Task[None]] = []

    async def healthy(self, endpoints: list[str]) -> bool:
        """The engines answer /health over the network path the gateway itself uses for inference."""
        if self.pool is None or not endpoints:
            return False
        return await wait_healthy(self.pool, endpoints, self.config.delivery.health_timeout_s)

    def register(self, router: Router) -> None:
        a, u = self.api, self.uploads
        dep = f"{API}/deployments/{{deployment_id}}"
        upload = f"{API}/models/uploads/{{upload_id}}"
        for method, path, handler, body, ok, summary in (
            ("POST", f"{API}/deployments", a.create, DeploymentSpec, 202, "Create a deployment (stack `up`)"),
            ("GET", f"{API}/deployments", a.list, None, 200, "The deployments this key can see"),
            ("POST", f"{API}/gitops/stacks", a.register_git_stack, GitStackBody, 202, "Register a git stack"),
            ("GET", dep, a.get, None, 200, "A deployment, its lifecycle and any stack operation running"),
            ("DELETE", dep, a.delete, None, 202, "Tear a deployment down (?keep_model_cache=false)"),
            ("PATCH", f"{dep}/scaling", a.scaling, Scaling, 202, "Autoscaling bounds (stack `up`)"),
            ("POST", f"{dep}/refresh", a.refresh, None, 202, "Compare the stack with the cloud"),
            (
                "POST",
                f"{dep}/up",
                a.up,
                None,
                202,
                "Up again as declared: retry a failed create, recover drift",
            ),
            ("PATCH", f"{dep}/sla", a.set_sla, Sla, 200, "SLA targets"),
            ("GET", f"{dep}/sla", a.get_sla, None, 200, "SLA targets, breaches and recoveries"),
            ("GET", f"{dep}/cost", a.cost, None, 200, "Capacity cost over a window, per 1M tokens, by key"),
            ("PATCH", f"{dep}/routing", a.set_routing, RoutingBody, 200, "How requests spread over replicas"),
            ("POST", f"{dep}/permissions", a.grant, GrantRequest, 201, "Grant a key of the org inference"),
            ("DELETE", f"{dep}/permissions/{{api_key_id}}", a.revoke, None, 200, "Revoke a key's grant"),
            ("POST", f"{dep}/webhooks", a.create_webhook, WebhookRequest, 201, "Register a signed webhook"),
            ("POST", f"{API}/models/upload", u.multipart, MODEL_UPLOAD_FORM, 202, "Upload a GGUF at once"),
            ("POST", f"{API}/models/uploads", u.create, UploadRequest, 201, "Start a resumable GGUF upload"),
            ("PATCH", upload, u.append, UPLOAD_CHUNK, 204, "Send a chunk at Upload-Offset (202: the last)"),
            ("GET", upload, u.status, None, 200, "An upload's status and offset"),
            ("HEAD", upload, u.status, None, 200, "An upload's offset (Upload-Offset header)"),
            ("DELETE", upload, u.cancel, None, 200, "Cancel an upload"),
        ):
            router.add(method, path, handler, body=body, summary=summary, ok=ok)

    async def startup(self) -> None:
        self.pool = HttpPool(connect_timeout_s=self.config.connect_timeout_s)
        self.webhooks.pool = self.autoscaler.pool = self.pool
        await asyncio.to_thread(self.sla.restore, self.store.deployments())
        w, a = self.webhooks, self.autoscaler
        for lease, interval_s, work in (
            ("webhook-sender", w.tick_s, w.send_due),
            ("autoscaler", a.interval_s, a.tick),
            ("waker", self.config.wake_poll_s, a.wake_due),
        ):
            self.background.append(asyncio.create_task(self.leased_loop(lease, interval_s, work)))
        # every process sweeps the abandoned upload parts on its own disk
        self.background.append(
            asyncio.create_task(self.loop("upload expiry", 600.0, self.uploads.expire_parts))
        )

    async def shutdown(self) -> None:
        await cancel(self.background)
        for lease in ("webhook-sender", "autoscaler", "waker"):  # the next holder need not wait for expiry
            await self.db(self.store.release_lease, lease, self.holder)
        for task in list(self.jobs.tasks) + list(self.uploads.tasks):
            task.cancel()
        if self.pool is not None:
            self.pool.close()
        self.db.close()

    async def loop(self, name: str, interval_s: float, work: Callable[[], Awaitable[Any]]) -> None:
        """Run ``work`` every interval in this process; a failing round is logged and the loop goes on."""
        while True:
            try:
                await work()
            except Exception:
                log.exception("%s round failed", name)
            await asyncio.sleep(interval_s)

    async def leased_loop(self, lease: str, interval_s: float, work: Callable[[], Awaitable[Any]]) -> None:
        """Run ``work`` every interval on the one process holding ``lease`` (it moves when its holder stops
        renewing); a failing round is logged and the loop goes on."""
        while True:
            try:
                if await self.db(self.store.acquire_lease, lease, self.holder, interval_s * 3):
                    await work()
            except Exception:
                log.exception("%s round failed", lease)
            await asyncio.sleep(interval_s)

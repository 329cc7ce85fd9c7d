"""The management API's HTTP handlers (thin): deployments, scaling, SLA, refresh, permissions, webhooks.

Same keys as inference: an admin key of the org creates, scales and deletes; keys of the org (or members)
read. Long operations return 202 at once and run as jobs (see deployments.py); a busy stack answers 409."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable
from typing import TypeVar

from pydantic import BaseModel, Field

from agentcloud import usage
from agentcloud.catalog import Catalog, Routing
from agentcloud.control.deployments import Deployments
from agentcloud.control.errors import GitOwned, NotManaged, StackBusy, UnsafeURL
from agentcloud.control.sla import SlaWatch
from agentcloud.control.webhooks import EVENTS, WebhookSender, check_url, seal
from agentcloud.errors import InfraError, PlanError, SpecError, ValidationError
from agentcloud.gateway import authz
from agentcloud.gateway.asgi import Request
from agentcloud.gateway.errors import GatewayError, bad_request, forbidden, not_found
from agentcloud.gateway.routing import Deployment, RouteTable
from agentcloud.gateway.schemas import GrantRequest, WebhookRequest, parse
from agentcloud.lifecycle.operations import validate_deployment
from agentcloud.records import DeploymentRecord, IllegalTransition
from agentcloud.spec import Scaling, Sla
from agentcloud.store import Store
from agentcloud.store.keys import new_id
from agentcloud.store.offload import StoreThread

M = TypeVar("M", bound=BaseModel)


class RoutingBody(BaseModel, extra="forbid"):
    """PATCH .../routing: how requests spread over the deployment's replicas."""

    routing: Routing


def busy(exc: StackBusy | NotManaged | GitOwned) -> GatewayError:
    code = {StackBusy: "operation_in_progress", GitOwned: "owned_by_git"}.get(type(exc), "not_managed")
    return GatewayError(409, str(exc), code=code)


class GitStackBody(BaseModel, extra="forbid"):
    """POST /gitops/stacks: a stack the GitOps workflow applied (its name and its file as in git)."""

    stack: str = Field(pattern=r"^[A-Za-z0-9_-]{1,100}$")  # git stacks have no dots; API stacks do
    stack_file: str = Field(min_length=1, max_length=65536)


class ManagementApi:
    """Handlers of the management routes; each checks the caller's right on the deployment, then acts."""

    def __init__(
        self,
        deployments: Deployments,
        routes: RouteTable,
        catalog: Catalog,
        store: Store,
        db: StoreThread,
        sla: SlaWatch,
        webhooks: WebhookSender,
        pepper: bytes,
        max_body_bytes: int,
    ) -> None:
        self.deployments, self.routes, self.catalog, self.store, self.db = (
            deployments,
            routes,
            catalog,
            store,
            db,
        )
        self.sla, self.webhooks, self.pepper, self.max_body_bytes = sla, webhooks, pepper, max_body_bytes

    async def _body_as(self, req: Request, model: type[M], what: str) -> M:
        return parse(model, await req.json_object(self.max_body_bytes), what)

    async def _accepted(self, req: Request, operation: Awaitable[DeploymentRecord]) -> None:
        """Start a stack operation, answer 202 with the deployment; 409 when its stack is busy or absent."""
        try:
            record = await operation
        except (StackBusy, NotManaged, GitOwned) as exc:
            raise busy(exc) from None
        except IllegalTransition as exc:  # e.g. scaling a deployment that is being torn down
            raise GatewayError(409, str(exc), code="invalid_state") from None
        await req.json(await self.deployments.public(record), status=202)

    async def _record(self, dep: Deployment) -> DeploymentRecord:
        record = await self.deployments.get(dep.id)
        if record is None:  # a deployment of the routes file: nothing in the store to act on
            raise busy(NotManaged(dep.id))
        return record

    async def _managed(self, req: Request) -> DeploymentRecord:
        """The deployment named by the route, which the caller's key may manage (else 401/403/404)."""
        dep_id = req.params["deployment_id"]
        return await self._record(
            authz.manage_deployment(req.caller, self.routes.deployments.get(dep_id), dep_id)
        )

    async def _readable(self, req: Request) -> DeploymentRecord:
        dep_id = req.params["deployment_id"]
        return await self._record(
            authz.read_deployment(req.caller, self.routes.deployments.get(dep_id), dep_id)
        )

    # -- deployments -----------------------------------------------------------------------------------------
    async def create(self, req: Request) -> None:
        key = req.caller
        if "deployment:manage" not in key.org_permissions(key.org_id):
            raise forbidden("creating deployments needs an admin key")
        try:
            await asyncio.to_thread(self.deployments.stack_ops.preflight)
        except InfraError as exc:  # nothing is recorded: the request can simply be sent again once fixed
            raise GatewayError(
                503,
                f"deployments cannot be created here: {exc}",
                "server_error",
                code="control_plane_unavailable",
                headers={"Retry-After": "60"},
            ) from None
        body = await req.json_object(self.max_body_bytes)
        try:
            spec = validate_deployment(body, self.catalog)
        except SpecError as exc:
            raise bad_request(str(exc).replace("request: ", ""), code="invalid_deployment") from None
        except PlanError as exc:
            raise GatewayError(422, str(exc), code="does_not_fit") from None
        if any(d.name == spec.name and d.org_id == key.org_id for d in await self.deployments.all()):
            raise GatewayError(409, f"your org has a deployment named {spec.name}", code="name_taken")
        await self._accepted(req, self.deployments.create(key.org_id, spec))

    async def register_git_stack(self, req: Request) -> None:
        """A stack applied from git, registered (again, at each apply): served, and autoscaled within the
        file's bounds; 202 with the deployment, 400 naming the file's problems, 409 when it is not the
        org's to register."""
        key = req.caller
        if "deployment:manage" not in key.org_permissions(key.org_id):
            raise forbidden("registering stacks needs an admin key")
        body = await self._body_as(req, GitStackBody, "stack")
        try:
            operation = self.deployments.register_git_stack(key.org_id, body.stack, body.stack_file)
            await self._accepted(req, operation)
        except ValidationError as exc:  # the file's problems (SpecError), or YAML that is not a stack file
            raise bad_request(str(exc), code="invalid_stack_file") from None

    async def list(self, req: Request) -> None:
        key = req.caller
        out = [
            await self.deployments.public(r)
            for r in await self.deployments.all()
            if key.org_permissions(r.org_id) or r.id in key.grants
        ]
        await req.json({"object": "list", "data": out})

    async def get(self, req: Request) -> None:
        await req.json(await self.deployments.public(await self._readable(req)))

    async def delete(self, req: Request) -> None:
        record = await self._managed(req)
        keep = req.query().get("keep_model_cache", "true") != "false"
        await self._accepted(req, self.deployments.delete(record, keep))

    async def scaling(self, req: Request) -> None:
        record = await self._managed(req)
        scaling = await self._body_as(req, Scaling, "scaling")
        await self._accepted(req, self.deployments.set_scaling(record, scaling))

    async def refresh(self, req: Request) -> None:
        record = await self._managed(req)
        await self._accepted(req, self.deployments.refresh(record))

    async def up(self, req: Request) -> None:
        record = await self._managed(req)
        await self._accepted(req, self.deployments.up(record))

    async def set_sla(self, req: Request) -> None:
        record = await self._managed(req)
        sla = await self._body_as(req, Sla, "sla")
        record = await self.deployments.set_sla(record, sla)
        await req.json(await self.sla.report(record))

    async def set_routing(self, req: Request) -> None:
        record = await self._managed(req)
        body = await self._body_as(req, RoutingBody, "routing")
        record = await self.deployments.set_routing(record, body.routing)
        await req.json(await self.deployments.public(record))

    async def cost(self, req: Request) -> None:
        """What the deployment's capacity cost over a window (?window=1h|24h|7d|30d), per 1M tokens, and by
        the keys and orgs that used it; and to date."""
        record = await self._readable(req)
        window = req.query().get("window", usage.DEFAULT_WINDOW)
        if window not in usage.WINDOWS:
            raise bad_request(f"window: one of {', '.join(usage.WINDOWS)}", param="window")
        now = time.time()
        since = now - usage.WINDOWS[window]
        rows = await self.db(self.store.usage_since, None, since // 60 * 60, record.id)
        report = usage.capacity_cost(record.meter.cost(since, now), rows)
        await req.json(
            {
                "object": "deployment.cost",
                "deployment_id": record.id,
                "window": window,
                "since": since,
                "rate_usd_per_hour": round(record.meter.rate, 4),
                "to_date_usd": round(record.meter.cost(0.0, now), 4),
                **report,
            }
        )

    async def get_sla(self, req: Request) -> None:
        await req.json(await self.sla.report(await self._readable(req)))

    # -- permissions and webhooks ----------------------------------------------------------------------------
    async def grant(self, req: Request) -> None:
        dep_id = req.params["deployment_id"]
        dep = authz.manage_deployment(req.caller, self.routes.deployments.get(dep_id), dep_id)
        body = await self._body_as(req, GrantRequest, "grant")
        api_key_id, role = body.api_key_id, body.role
        grantee = await self.db(self.store.key_by_id, api_key_id)
        if grantee is None or grantee.org_id != dep.org_id:  # another org's keys are not this org's to name
            raise not_found(
                f"API key {api_key_id} not found in the deployment's org", code="api_key_not_found"
            )
        await self.db(self.store.grant, dep.id, api_key_id, role)
        await self.deployments.keys_changed()
        await req.json({"deployment_id": dep.id, "api_key_id": api_key_id, "role": role}, status=201)

    async def revoke(self, req: Request) -> None:
        dep_id, api_key_id = req.params["deployment_id"], req.params["api_key_id"]
        dep = authz.manage_deployment(req.caller, self.routes.deployments.get(dep_id), dep_id)
        if not await self.db(self.store.revoke_grant, dep.id, api_key_id):
            raise not_found(f"API key {api_key_id} has no grant on {dep.id}", code="grant_not_found")
        await self.deployments.keys_changed()
        await req.json({"deployment_id": dep.id, "api_key_id": api_key_id, "deleted": True})

    async def create_webhook(self, req: Request) -> None:
        dep_id = req.params["deployment_id"]
        dep = authz.manage_deployment(req.caller, self.routes.deployments.get(dep_id), dep_id)
        body = await self._body_as(req, WebhookRequest, "webhook")
        url, events = body.url, list(body.events)
        if len(set(events)) != len(events):
            raise bad_request(f"events: a list of distinct events among {', '.join(EVENTS)}", param="events")
        try:
            await asyncio.to_thread(check_url, url, self.webhooks.policy)
        except UnsafeURL as exc:
            raise bad_request(f"url refused: {exc}", param="url", code="unsafe_url") from None
        secret = secrets.token_hex(32)
        hook_id = new_id("whk")
        await self.db(
            self.store.create_webhook, hook_id, dep.org_id, dep.id, url, events, seal(self.pepper, secret)
        )
        await req.json(
            {
                "id": hook_id,
                "deployment_id": dep.id,
                "url": url,
                "events": events,
                "secret": secret,
                "signature_header": "X-AINative-Signature",
            },
            status=201,
        )

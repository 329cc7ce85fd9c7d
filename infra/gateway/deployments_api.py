"""The management API: deployments as stack operations, run as background jobs (responses return at once).

POST/GET /deployments, GET/DELETE /deployments/{id}, PATCH .../scaling, PATCH and GET .../sla. Same keys as
inference: an admin key of the org creates, scales and deletes; keys of the org (or members) read.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from infra.errors import PlanError, SpecError
from infra.gateway import authz
from infra.gateway.asgi import Request
from infra.gateway.errors import GatewayError, bad_request, forbidden
from infra.gateway.proxy import wait_healthy
from infra.gateway.routing import Deployment, deployment_from
from infra.lifecycle.jobs import Job, StackBusy
from infra.lifecycle.operations import validate_deployment, write_stack_file
from infra.lifecycle.state import Lifecycle, Status
from infra.sla import SlaMonitor
from infra.spec import Scaling, Sla

M = TypeVar("M", bound=BaseModel)

if TYPE_CHECKING:
    from infra.gateway.app import Gateway


def _record(dep: Deployment, row: dict[str, Any]) -> dict[str, Any]:
    spec = row["spec"].get("deployment", {})
    return {
        "id": dep.id, "object": "deployment", "name": dep.name, "model_id": spec.get("model_id", dep.model_id),
        "gpu_type": spec.get("gpu_type") or dep.gpu_type, "region": spec.get("region"),
        "replicas": spec.get("replicas", 1), "preset": spec.get("preset", "balanced"), "status": dep.status,
        "scaling": spec.get("scaling"), "sla": spec.get("sla"), "endpoints": [t.base_url for t in dep.targets],
        "lifecycle": row["spec"].get("lifecycle"),
    }  # fmt: skip


class DeploymentsApi:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.sla: dict[str, SlaMonitor] = {}

    def restore_sla(self) -> None:
        """SLA monitors for the deployments that declare targets (at startup)."""
        for row in self.gw.store.deployments():
            sla = ((row["spec"] or {}).get("deployment") or {}).get("sla")
            if sla:
                self.sla[row["id"]] = SlaMonitor(Sla.model_validate(sla))

    # -- helpers ---------------------------------------------------------------------------------------
    async def _row(self, dep_id: str) -> dict[str, Any] | None:
        rows = await self.gw.db(self.gw.store.deployments)
        return next((r for r in rows if r["id"] == dep_id), None)

    async def _save(self, dep_id: str, lifecycle: Lifecycle, spec: dict[str, Any] | None = None,
                    routes: dict[str, Any] | None = None) -> None:  # fmt: skip
        row = await self._row(dep_id)
        assert row is not None
        meta = {**row["spec"], "lifecycle": lifecycle.as_dict(), "_lifecycle": _dump(lifecycle)}
        if spec is not None:
            meta["deployment"] = spec
        routes = row["routes"] if routes is None else routes
        await self.gw.db(self.gw.store.upsert_deployment, dep_id, row["org_id"], row["name"], row["model_id"],
                         lifecycle.status.value, meta, routes)  # fmt: skip
        entry = {**routes, "id": dep_id, "org_id": row["org_id"], "name": row["name"], "status": lifecycle.status.value,
                 "model_id": routes.get("model_id", row["model_id"])}  # fmt: skip
        self.gw.routes.add_deployment(deployment_from(entry))

    async def _lifecycle(self, dep_id: str) -> Lifecycle:
        row = await self._row(dep_id)
        assert row is not None
        return _load(row["spec"]["_lifecycle"])

    async def _move(
        self, dep_id: str, target: Status, reason: str, healthy: bool = False, **kw: Any
    ) -> Lifecycle:
        lc = (await self._lifecycle(dep_id)).to(target, time.time(), reason, healthy=healthy)
        await self._save(dep_id, lc, **kw)
        return lc

    async def _healthy(self, dep_id: str) -> bool:
        """The engines answer /health over the network path the gateway itself uses for inference."""
        dep = self.gw.routes.deployments.get(dep_id)
        if self.gw.upstreams.pool is None or dep is None or not dep.targets:
            return False
        return await wait_healthy(
            self.gw.upstreams.pool, dep.targets, self.gw.config.delivery.health_timeout_s
        )

    async def _converge(self, dep_id: str, job: Job, operation: str, stack: str) -> None:
        """`up`, register the engines, then active if healthy, else degraded (with the webhook either way)."""
        from infra.gateway_cli import routes_from_outputs

        try:
            outputs = await asyncio.to_thread(self.gw.stack_ops.up, stack, job.log.append)
        except Exception as exc:
            await self._move(dep_id, Status.DEGRADED, f"{operation} failed: {exc}"[:300])
            await self.gw.webhooks.emit(dep_id, "deployment.degraded", {"reason": f"{operation} failed"})
            raise
        routes = routes_from_outputs(outputs, None)
        row = await self._row(dep_id)
        assert row is not None
        routes["api_key_env"] = row["routes"].get("api_key_env")
        lc = await self._lifecycle(dep_id)
        await self._save(dep_id, lc, routes=routes)
        if not routes["endpoints"]:
            await self._move(dep_id, Status.INACTIVE, "scaled to zero")
            return
        if await self._healthy(dep_id):
            await self._move(dep_id, Status.ACTIVE, f"{operation}: engine healthy", healthy=True)
            event = "deployment.active" if operation == "create" else "deployment.scaled"
            await self.gw.webhooks.emit(dep_id, event, {"replicas": len(routes["endpoints"])})
        else:
            await self._move(dep_id, Status.DEGRADED, f"{operation}: engine not healthy in time")
            await self.gw.webhooks.emit(dep_id, "deployment.degraded", {"reason": "health check"})

    def _start(self, stack: str, operation: str, work: Any) -> tuple[Job, asyncio.Event]:
        """Reserve the stack (409 when busy) with a job that waits until the caller has done its bookkeeping
        (stack file written, status recorded) and sets the returned event."""
        go = asyncio.Event()

        async def gated(job: Job) -> None:
            await go.wait()
            if job.status == "cancelled":
                return
            await work(job)

        try:
            return self.gw.jobs.start(stack, operation, gated), go
        except StackBusy as busy:
            raise GatewayError(409, str(busy), code="operation_in_progress") from None

    async def _public(self, dep_id: str) -> dict[str, Any]:
        row = await self._row(dep_id)
        dep = self.gw.routes.deployments[dep_id]
        assert row is not None
        out = _record(dep, row)
        running = self.gw.jobs.running.get(row["name"])
        out["job"] = running.as_dict() if running else None
        return out

    async def _body_as(self, req: Request, model: type[M], what: str) -> M:
        body = await req.json_object(self.gw.config.max_body_bytes)
        try:
            return model.model_validate(body)
        except ValueError as exc:
            raise bad_request(f"invalid {what}: {exc}", code=f"invalid_{what}") from None

    async def _managed(self, req: Request) -> tuple[str, Deployment]:
        """The deployment named by the route, which the caller's key may manage (else 401/403/404)."""
        key = await self.gw.authenticate(req)
        dep_id = req.params["deployment_id"]
        return dep_id, authz.manage_deployment(key, self.gw.routes.deployments.get(dep_id), dep_id)

    # -- routes ----------------------------------------------------------------------------------------
    async def create(self, req: Request) -> None:
        key = await self.gw.authenticate(req)
        if "deployment:manage" not in key.org_permissions(key.org_id):
            raise forbidden("creating deployments needs an admin key")
        body = await req.json_object(self.gw.config.max_body_bytes)
        try:
            spec = validate_deployment(body, self.gw.catalog)
        except SpecError as exc:
            raise bad_request(str(exc).replace("request: ", ""), code="invalid_deployment") from None
        except PlanError as exc:
            raise GatewayError(422, str(exc), code="does_not_fit") from None
        if any(d.name == spec.name for d in self.gw.routes.deployments.values()):
            raise GatewayError(409, f"a deployment named {spec.name} exists", code="name_taken")
        dep_id = f"dep_{secrets.token_hex(6)}"
        lc = Lifecycle.new(time.time())
        meta = {"deployment": spec.model_dump(mode="json", exclude_defaults=True), "stack": spec.name,
                "lifecycle": lc.as_dict(), "_lifecycle": _dump(lc)}  # fmt: skip
        await self.gw.db(self.gw.store.upsert_deployment, dep_id, key.org_id, spec.name, spec.model_id,
                         lc.status.value, meta, {})  # fmt: skip
        self.gw.routes.add_deployment(
            Deployment(dep_id, key.org_id, spec.name, spec.model_id, (), status=lc.status.value)
        )
        _, go = self._start(spec.name, "create", lambda job: self._converge(dep_id, job, "create", spec.name))
        try:
            await asyncio.to_thread(write_stack_file, spec, self.gw.stacks_dir)
        finally:
            go.set()
        await req.json(await self._public(dep_id), status=202)

    async def list(self, req: Request) -> None:
        key = await self.gw.authenticate(req)
        rows = await self.gw.db(self.gw.store.deployments)
        out = []
        for row in rows:
            dep = self.gw.routes.deployments.get(row["id"])
            if dep is not None and (key.org_permissions(dep.org_id) or dep.id in key.grants):
                out.append(_record(dep, row))
        await req.json({"object": "list", "data": out})

    async def get(self, req: Request) -> None:
        key = await self.gw.authenticate(req)
        dep_id = req.params["deployment_id"]
        authz.read_deployment(key, self.gw.routes.deployments.get(dep_id), dep_id)
        await req.json(await self._public(dep_id))

    async def delete(self, req: Request) -> None:
        dep_id, dep = await self._managed(req)
        keep = (dict(pair.split("=", 1) for pair in req.scope.get("query_string", b"").decode().split("&") if "=" in pair)
                .get("keep_model_cache", "true") != "false")  # fmt: skip

        async def work(job: Job) -> None:
            try:
                await asyncio.to_thread(self.gw.stack_ops.destroy, dep.name, keep, job.log.append)
            except Exception:
                await self._move(dep_id, Status.DEGRADED, "teardown failed")
                raise
            await self._move(dep_id, Status.INACTIVE, "destroyed; billing stopped", routes={})

        job, go = self._start(dep.name, "teardown", work)
        try:
            await self._move(
                dep_id, Status.TEARDOWN, f"DELETE (keep_model_cache={str(keep).lower()}, job {job.id})"
            )
        except BaseException:
            job.status = "cancelled"
            raise
        finally:
            go.set()
        await req.json(await self._public(dep_id), status=202)

    async def scaling(self, req: Request) -> None:
        dep_id, dep = await self._managed(req)
        scaling = await self._body_as(req, Scaling, "scaling")
        row = await self._row(dep_id)
        assert row is not None
        current = dict(row["spec"]["deployment"])
        replicas = min(max(int(current.get("replicas", 1)), scaling.min_replicas), scaling.max_replicas)
        new = {**current, "scaling": scaling.model_dump(mode="json"), "replicas": replicas}
        await self._apply(dep_id, dep, new, f"scaling set to {scaling.model_dump(mode='json')}")
        await req.json(await self._public(dep_id), status=202)

    async def scale_to(self, dep_id: str, replicas: int, reason: str) -> bool:
        """The autoscaler's and the wake's way in: change replicas; False when the stack is busy."""
        dep = self.gw.routes.deployments.get(dep_id)
        row = await self._row(dep_id)
        if dep is None or row is None:
            return False
        new = {**row["spec"]["deployment"], "replicas": replicas}
        try:
            await self._apply(dep_id, dep, new, reason)
        except GatewayError as err:
            if err.status == 409:
                return False
            raise
        return True

    async def _apply(self, dep_id: str, dep: Deployment, new: dict[str, Any], reason: str) -> None:
        """Write the new deployment object to its stack file and converge (`up`) in a job; status scaling."""
        spec = validate_deployment(new, self.gw.catalog)
        job, go = self._start(dep.name, "scale", lambda job: self._converge(dep_id, job, "scale", dep.name))
        try:
            await asyncio.to_thread(write_stack_file, spec, self.gw.stacks_dir)
            await self._move(dep_id, Status.SCALING, f"{reason} (job {job.id})", spec=new)
        except BaseException:
            job.status = "cancelled"
            raise
        finally:
            go.set()

    async def refresh(self, req: Request) -> None:
        """`pulumi refresh`: a droplet deleted outside Pulumi shows as drift, and the deployment as degraded."""
        from infra.gateway_cli import routes_from_outputs

        dep_id, dep = await self._managed(req)

        async def work(job: Job) -> None:
            outputs = await asyncio.to_thread(self.gw.stack_ops.refresh, dep.name, job.log.append)
            row = await self._row(dep_id)
            assert row is not None
            wanted = int(row["spec"]["deployment"].get("replicas", 1))
            found = len(routes_from_outputs(outputs, None)["endpoints"])
            if found < wanted:
                await self._move(dep_id, Status.DEGRADED, f"drift: {found} of {wanted} droplets exist")
                await self.gw.webhooks.emit(dep_id, "deployment.degraded", {"reason": "drift", "found": found,
                                                                             "wanted": wanted})  # fmt: skip
            elif dep.status == Status.DEGRADED.value and await self._healthy(dep_id):
                await self._move(dep_id, Status.ACTIVE, "refresh: no drift, engine healthy", healthy=True)

        _, go = self._start(dep.name, "refresh", work)
        go.set()
        await req.json(await self._public(dep_id), status=202)

    async def set_sla(self, req: Request) -> None:
        dep_id, dep = await self._managed(req)
        sla = await self._body_as(req, Sla, "sla")
        row = await self._row(dep_id)
        assert row is not None
        new = {**row["spec"]["deployment"], "sla": sla.model_dump(mode="json", exclude_none=True)}
        spec = validate_deployment(new, self.gw.catalog)
        await asyncio.to_thread(write_stack_file, spec, self.gw.stacks_dir)
        await self._save(dep_id, await self._lifecycle(dep_id), spec=new,
                         routes={**row["routes"], "concurrency_limit": sla.concurrency_limit})  # fmt: skip
        self.sla[dep.id] = SlaMonitor(sla)
        await self._sla_response(req, dep_id)

    async def get_sla(self, req: Request) -> None:
        key = await self.gw.authenticate(req)
        dep_id = req.params["deployment_id"]
        authz.read_deployment(key, self.gw.routes.deployments.get(dep_id), dep_id)
        await self._sla_response(req, dep_id)

    async def _sla_response(self, req: Request, dep_id: str) -> None:
        row = await self._row(dep_id)
        assert row is not None
        monitor = self.sla.get(dep_id)
        await req.json({"deployment_id": dep_id, "targets": row["spec"]["deployment"].get("sla") or {},
                        "breached": sorted(monitor.breached) if monitor else [],
                        "history": [e.as_dict() for e in monitor.history] if monitor else []})  # fmt: skip


def _dump(lc: Lifecycle) -> dict[str, Any]:
    return {"status": lc.status.value, "since": lc.since,
            "history": [[t.at, t.source.value if t.source else None, t.target.value, t.reason] for t in lc.history]}  # fmt: skip


def _load(data: dict[str, Any]) -> Lifecycle:
    from infra.lifecycle.state import Transition

    history = tuple(
        Transition(at, Status(src) if src else None, Status(dst), why)
        for at, src, dst, why in data["history"]
    )
    return Lifecycle(Status(data["status"]), data["since"], history)


__all__ = ["DeploymentsApi"]

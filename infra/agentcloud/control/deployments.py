"""Deployments as operations on typed records: create, scale, refresh, teardown, SLA, each a stack operation
in a background job, with the lifecycle moved and saved through one path (`move`) and every state change sent
as a signed webhook. Side effects go through ports handed in at composition: `StackOps` (Pulumi, or a
stand-in), the stack files' folder, the engines' health check, and `publish` (tell an in-process data plane at
once)."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from agentcloud.catalog import Catalog, Routing
from agentcloud.control.errors import GitOwned, NotManaged, StackBusy
from agentcloud.control.jobs import Job, JobRunner
from agentcloud.control.outputs import routes_from_outputs
from agentcloud.control.secrets_push import ENGINE_KEY_ENV, PushSecrets
from agentcloud.control.sla import SlaWatch
from agentcloud.control.webhooks import WebhookSender
from agentcloud.document import parse_document
from agentcloud.errors import InfraError
from agentcloud.gateway.routing import Deployment, deployment_from_record
from agentcloud.lifecycle.operations import (
    api_stack_name,
    validate_deployment,
    write_stack_file,
    write_text_atomic,
)
from agentcloud.records import DeploymentRecord, Lifecycle, Reason, Status
from agentcloud.spec import DeploymentSpec, Scaling, Sla, gpu_type_of, parse_stack
from agentcloud.store import Store
from agentcloud.store.offload import StoreThread

Progress = Callable[[str], None]
Publish = Callable[[DeploymentRecord | None], Awaitable[None]]  # a saved record, or None: keys changed
HealthCheck = Callable[[list[str]], Awaitable[bool]]


class StackOps(Protocol):
    """The port to a deployment's stack: `up`, `refresh` and `destroy` (the Automation API in production)."""

    def up(self, stack: str, progress: Progress, replicas: int | None = None) -> dict[str, Any]:
        """``replicas``: the live count to run (a stack from git, whose file gives only where it starts)."""
        ...

    def refresh(self, stack: str, progress: Progress) -> dict[str, Any]: ...

    def destroy(self, stack: str, keep_model_cache: bool, progress: Progress) -> None: ...

    def preflight(self) -> None:
        """Raise, naming what is missing and how to fix it, when no operation could run (checked before a
        deployment record exists)."""


def state_event(record: DeploymentRecord) -> str | None:
    """The webhook of the state a record has just settled in, from its last transitions: active after a
    create, recovered when it comes back from degraded (directly or through an up), scaled after any other
    change of replicas (scale-to-zero and wake included), degraded, and inactive once torn down. Moves into
    the states of work in progress (provisioning, scaling, teardown) send nothing: their outcome does."""
    history = record.lifecycle.history if record.lifecycle else ()
    if not history:
        return None
    last = history[-1]
    if last.target is Status.DEGRADED:
        return "deployment.degraded"
    if last.target is Status.INACTIVE:
        return "deployment.inactive" if last.source is Status.TEARDOWN else "deployment.scaled"
    if last.target is not Status.ACTIVE:
        return None
    came_from = last.source
    if came_from is Status.SCALING and len(history) > 1:  # where the scaling started from
        came_from = history[-2].source
    if came_from is Status.DEGRADED:
        return "deployment.recovered"
    return "deployment.active" if came_from is Status.PROVISIONING else "deployment.scaled"


def _provisioning(
    dep_id: str, org_id: str, spec: DeploymentSpec, declared: dict[str, Any], stack: str, git: bool = False
) -> DeploymentRecord:
    """A new deployment's record, before its first operation (made through the API, or registered from
    git)."""
    reason = "registered from git" if git else "created"
    return DeploymentRecord(
        id=dep_id,
        org_id=org_id,
        name=spec.name,
        model_id=spec.model_id,
        status=Status.PROVISIONING,
        spec=declared,
        stack=stack,
        lifecycle=Lifecycle.new(time.time(), reason),
        git=git,
    )


class Deployments:
    """The control plane's deployments: the only writer of deployment records."""

    def __init__(
        self,
        store: Store,
        db: StoreThread,
        catalog: Catalog,
        jobs: JobRunner,
        stack_ops: StackOps,
        stacks_dir: Path,
        webhooks: WebhookSender,
        sla: SlaWatch,
        healthy: HealthCheck,
        publish: Publish,
    ) -> None:
        self.store, self.db, self.catalog, self.jobs = store, db, catalog, jobs
        self.stack_ops, self.stacks_dir, self.webhooks, self.sla = stack_ops, stacks_dir, webhooks, sla
        self.healthy, self.publish = healthy, publish
        self.push_secrets: PushSecrets | None = None  # set by the control plane from its config
        # a `byom:` deployment's delivered model onto new droplets (set by the control plane: its uploads)
        self.redeliver: Callable[[Deployment], Awaitable[tuple[str | None, str | None]]] | None = None
        self._edits: dict[str, asyncio.Lock] = {}  # one settings edit per deployment at a time
        self.clock: Callable[[], float] = time.time  # the meter's (tests move it)

    # -- records --------------------------------------------------------------------------------------------
    async def get(self, dep_id: str) -> DeploymentRecord | None:
        return await self.db(self.store.deployment, dep_id)

    async def all(self) -> list[DeploymentRecord]:
        return await self.db(self.store.deployments)

    async def save(self, record: DeploymentRecord) -> DeploymentRecord:
        record = dataclasses.replace(record, meter=record.meter.at(self.clock(), self.hourly_rate(record)))
        await self.db(self.store.save_deployment, record)
        await self.publish(record)
        return record

    def hourly_rate(self, record: DeploymentRecord) -> float:
        """What the replicas running cost an hour at the catalog's price (GPU droplets; zero at zero, and for
        a deployment registered by hand: its capacity is not ours to price)."""
        if not record.stack or not record.spec or not record.running:
            return 0.0
        try:
            spec = validate_deployment(record.spec, self.catalog)
            gpu = self.catalog.gpu_types[str(gpu_type_of(spec, self.catalog))]
        except (InfraError, KeyError):
            return 0.0
        return float(gpu.hourly_usd) * record.running

    @staticmethod
    def stack_of(record: DeploymentRecord) -> str:
        """The stack the control plane made for the deployment; a route registered by hand has none."""
        if not record.stack or not record.spec:
            raise NotManaged(record.id)
        return record.stack

    async def keys_changed(self) -> None:
        await self.publish(None)

    async def move(
        self, dep_id: str, target: Status, reason: str, healthy: bool = False, **changes: Any
    ) -> DeploymentRecord:
        """Re-read the record, apply ``changes``, move its lifecycle (checked), save and publish, then send
        the webhook of the state it settled in (`state_event`)."""
        record = await self.get(dep_id)
        assert record is not None, dep_id
        before = record.status
        record = dataclasses.replace(record, **changes).moved(target, time.time(), reason, healthy=healthy)
        record = await self.save(record)
        event = state_event(record) if record.status is not before else None
        if event is not None:
            data = {
                "status": record.status.value,
                "reason": reason,
                "replicas": len(record.routes.get("endpoints") or []),
            }
            await self.webhooks.emit(dep_id, event, data)
        return record

    async def public(self, record: DeploymentRecord) -> dict[str, Any]:
        """The reference API's deployment object, with the stack operation in progress if any."""
        spec = record.spec
        running = await self.jobs.running(record.stack) if record.stack else None
        last = None
        if running is None and record.stack:  # what the last operation did, once it has ended
            ended = await self.db(self.store.stack_jobs, record.stack, 1)
            last = ended[0].as_dict() if ended else None
        return {
            "id": record.id,
            "object": "deployment",
            "name": record.name,
            "model_id": spec.get("model_id", record.model_id),
            "gpu_type": spec.get("gpu_type") or record.routes.get("gpu_type"),
            "region": spec.get("region"),
            "replicas": spec.get("replicas", 1),
            "preset": spec.get("preset", "balanced"),
            "status": record.status.value,
            "routing": record.routes.get("routing") or spec.get("routing") or Routing.PREFIX_AWARE.value,
            "scaling": spec.get("scaling"),
            "sla": spec.get("sla"),
            "endpoints": list(record.routes.get("endpoints") or []),
            "lifecycle": record.lifecycle.as_dict() if record.lifecycle else None,
            "job": running.as_dict() if running else None,
            "last_job": last,
            "cost": {
                "rate_usd_per_hour": round(record.meter.rate, 4),
                "to_date_usd": round(record.meter.cost(0.0, time.time()), 4),
            },
        }

    # -- jobs -----------------------------------------------------------------------------------------------
    async def _start(
        self, stack: str, operation: str, work: Callable[[Job], Awaitable[None]]
    ) -> tuple[Job, asyncio.Event]:
        """Reserve the stack (StackBusy when held anywhere) with a job that waits until the caller has done
        its bookkeeping (stack file written, status recorded) and sets the returned event."""
        go = asyncio.Event()

        async def gated(job: Job) -> None:
            await go.wait()
            if job.status == "cancelled":
                return
            await work(job)

        return await self.jobs.start(stack, operation, gated), go

    async def _converge(self, dep_id: str, job: Job, operation: str, stack: str) -> None:
        """`up`, register the engines, then active if healthy, else degraded (with the webhook either way).
        A stack from git is upped with the live count the control plane owns (its file says only where it
        starts); one just registered is not upped: its outputs are read (the GitOps workflow upped it)."""
        try:
            current = await self.get(dep_id)
            assert current is not None
            if operation == "register":
                outputs = await asyncio.to_thread(self.stack_ops.refresh, stack, job.log.append)
            elif current.git:
                live = int(current.spec.get("replicas", 1))
                outputs = await asyncio.to_thread(self.stack_ops.up, stack, job.log.append, live)
            else:
                outputs = await asyncio.to_thread(self.stack_ops.up, stack, job.log.append)
        except Exception as exc:
            await self.move(dep_id, Status.DEGRADED, f"{operation} failed: {exc}"[:300])
            raise
        record = await self.get(dep_id)
        assert record is not None
        routes = routes_from_outputs(outputs, None)
        byom = str(record.spec.get("model_id", "")).startswith("byom:")
        if byom and record.routes.get("upstream_model"):  # the uploaded model it serves, through zero too
            routes["model_id"] = routes["upstream_model"] = record.routes["upstream_model"]
        routes["api_key_env"] = record.routes.get("api_key_env")
        routes["routing"] = record.spec.get("routing", Routing.PREFIX_AWARE.value)
        if record.spec.get("sla", {}).get("concurrency_limit"):
            routes["concurrency_limit"] = record.spec["sla"]["concurrency_limit"]
        if not routes["endpoints"]:
            scaling = record.spec.get("scaling") or {}
            routes["wakeable"] = bool(scaling.get("scale_to_zero"))
            await self.move(dep_id, Status.INACTIVE, Reason.SCALED_TO_ZERO, routes=routes)
            return
        if self.push_secrets is None:
            job.log.append("no engine key configured (AGENTCLOUD_ENGINE_API_KEY): secrets not pushed")
        else:
            routes["api_key_env"] = routes.get("api_key_env") or ENGINE_KEY_ENV
            engine = str(routes.get("engine") or "vllm")
            problem = await asyncio.to_thread(self.push_secrets, routes["hosts"], engine)
            if problem is not None:
                await self.save(dataclasses.replace(record, routes=routes))
                await self.move(
                    dep_id, Status.DEGRADED, f"{operation}: secrets not delivered: {problem}"[:300]
                )
                return
            job.log.append(f"engine secrets delivered to {len(routes['hosts'])} droplet(s)")
        if byom and self.redeliver is not None:
            served, problem = await self.redeliver(
                deployment_from_record(dataclasses.replace(record, routes=routes))
            )
            if problem is not None or served is None:
                await self.save(dataclasses.replace(record, routes=routes))
                if problem is None and record.status is Status.PROVISIONING:
                    job.log.append("droplets ready: waiting for a model upload (POST /models/upload)")
                    return
                why = problem or "no model delivered yet: upload one (POST /models/upload)"
                await self.move(dep_id, Status.DEGRADED, f"{operation}: {why}"[:300])
                return
            routes["model_id"] = routes["upstream_model"] = served
            job.log.append(f"{served} on every droplet")
        record = await self.save(dataclasses.replace(record, routes=routes))
        if await self.healthy(routes["endpoints"]):
            await self.move(dep_id, Status.ACTIVE, f"{operation}: engine healthy", healthy=True)
        else:
            await self.move(dep_id, Status.DEGRADED, f"{operation}: engine not healthy in time")

    # -- operations -----------------------------------------------------------------------------------------
    async def create(self, org_id: str, spec: DeploymentSpec) -> DeploymentRecord:
        dep_id = f"dep_{secrets.token_hex(6)}"
        stack = api_stack_name(org_id, spec.name)
        record = _provisioning(
            dep_id, org_id, spec, spec.model_dump(mode="json", exclude_defaults=True), stack
        )
        _, go = await self._start(stack, "create", lambda job: self._converge(dep_id, job, "create", stack))
        try:
            await self.save(record)
            await asyncio.to_thread(write_stack_file, spec, self.stacks_dir, stack)
        finally:
            go.set()
        return record

    async def delete(self, record: DeploymentRecord, keep_model_cache: bool) -> DeploymentRecord:
        dep_id, stack = record.id, self.stack_of(record)
        if record.git:
            raise GitOwned(stack, "remove the stack (`pulumi destroy`, then the file)")

        async def work(job: Job) -> None:
            try:
                await asyncio.to_thread(self.stack_ops.destroy, stack, keep_model_cache, job.log.append)
            except Exception:
                await self.move(dep_id, Status.DEGRADED, "teardown failed")
                raise
            await self.move(dep_id, Status.INACTIVE, "destroyed; billing stopped", routes={})

        job, go = await self._start(stack, "teardown", work)
        try:
            keep = str(keep_model_cache).lower()
            return await self.move(dep_id, Status.TEARDOWN, f"DELETE (keep_model_cache={keep}, job {job.id})")
        except BaseException:
            job.status = "cancelled"
            raise
        finally:
            go.set()

    async def register_git_stack(self, org_id: str, stack: str, text: str) -> DeploymentRecord:
        """A stack the GitOps workflow applied, registered so that the gateway serves it and the autoscaler
        owns its live count: the stack file is kept as a copy (git owns it; each apply registers it again),
        the record follows it, keeping the live count within the file's bounds. Raises SpecError (the file),
        GitOwned (another org's stack, or a name the org uses for another deployment)."""
        spec = parse_stack(parse_document(text, f"stacks/Pulumi.{stack}.yaml"), self.catalog)
        records = await self.all()
        existing = next((r for r in records if r.stack == stack), None)
        if existing is not None and (existing.org_id != org_id or not existing.git):
            raise GitOwned(stack, "it is registered by another org or made through the API; rename it")
        if existing is None and any(r.name == spec.name and r.org_id == org_id for r in records):
            raise GitOwned(stack, f"your org has another deployment named {spec.name}; rename it")
        declared = spec.model_dump(mode="json", exclude_defaults=True)
        if existing is not None and spec.scaling is not None:  # the autoscaler's count, within the bounds
            live = int(existing.spec.get("replicas", spec.replicas))
            declared["replicas"] = min(max(live, spec.scaling.min_replicas), spec.scaling.max_replicas)
        dep_id = existing.id if existing else f"dep_{secrets.token_hex(6)}"
        _, go = await self._start(
            stack, "register", lambda job: self._converge(dep_id, job, "register", stack)
        )
        try:
            await asyncio.to_thread(write_text_atomic, self.stacks_dir / f"Pulumi.{stack}.yaml", text)
            if existing is not None:
                return await self.save(dataclasses.replace(existing, spec=declared, model_id=spec.model_id))
            return await self.save(_provisioning(dep_id, org_id, spec, declared, stack, git=True))
        finally:
            go.set()

    async def set_scaling(self, record: DeploymentRecord, scaling: Scaling) -> DeploymentRecord:
        if record.git:
            raise GitOwned(self.stack_of(record), "set `scaling`")
        bounds = scaling.model_dump(mode="json")
        replicas = min(max(int(record.spec.get("replicas", 1)), scaling.min_replicas), scaling.max_replicas)
        new = {**record.spec, "scaling": bounds, "replicas": replicas}
        return await self._apply(record, new, f"scaling set to {bounds}")

    async def scale_to(self, dep_id: str, replicas: int, reason: str) -> bool:
        """The autoscaler's and the wake's way in: change replicas; False when the stack is busy."""
        record = await self.get(dep_id)
        if record is None or not record.stack or not record.spec:
            return False
        try:
            await self._apply(record, {**record.spec, "replicas": replicas}, reason)
        except StackBusy:
            return False
        return True

    async def _apply(self, record: DeploymentRecord, new: dict[str, Any], reason: str) -> DeploymentRecord:
        """Write the new deployment object to its stack file and converge (`up`) in a job; status scaling."""
        stack = self.stack_of(record)
        spec = validate_deployment(new, self.catalog)
        job, go = await self._start(
            stack, "scale", lambda job: self._converge(record.id, job, "scale", stack)
        )
        try:
            if not record.git:  # a git stack's file is git's: its live count goes to the up instead
                await asyncio.to_thread(write_stack_file, spec, self.stacks_dir, stack)
            return await self.move(record.id, Status.SCALING, f"{reason} (job {job.id})", spec=new)
        except BaseException:
            job.status = "cancelled"
            raise
        finally:
            go.set()

    async def up(self, record: DeploymentRecord) -> DeploymentRecord:
        """`up` again as declared: retries a failed create, recovers droplets lost to drift (status scaling,
        then active or degraded with the reason)."""
        return await self._apply(record, dict(record.spec), "up again, as declared")

    async def refresh(self, record: DeploymentRecord) -> DeploymentRecord:
        """`pulumi refresh`: a droplet deleted outside Pulumi shows as drift, the deployment as degraded."""
        dep_id, stack = record.id, self.stack_of(record)

        async def work(job: Job) -> None:
            outputs = await asyncio.to_thread(self.stack_ops.refresh, stack, job.log.append)
            current = await self.get(dep_id)
            assert current is not None
            wanted = int(current.spec.get("replicas", 1))
            found = len(routes_from_outputs(outputs, None)["endpoints"])
            if found < wanted:
                await self.move(dep_id, Status.DEGRADED, f"drift: {found} of {wanted} droplets exist")
            elif current.status is Status.DEGRADED and await self.healthy(
                current.routes.get("endpoints") or []
            ):
                await self.move(dep_id, Status.ACTIVE, "refresh: no drift, engine healthy", healthy=True)

        _, go = await self._start(stack, "refresh", work)
        go.set()
        return record

    async def set_routing(self, record: DeploymentRecord, routing: Routing) -> DeploymentRecord:
        """How requests spread over the replicas: a gateway setting, no stack operation needed."""

        def change(current: DeploymentRecord) -> DeploymentRecord:
            spec = {**current.spec, "routing": routing.value} if current.spec else {}
            routes = {**current.routes, "routing": routing.value}
            return dataclasses.replace(current, spec=spec, routes=routes)

        return await self._edit(record.id, change)

    async def set_sla(self, record: DeploymentRecord, sla: Sla) -> DeploymentRecord:
        def change(current: DeploymentRecord) -> DeploymentRecord:
            spec = {**current.spec, "sla": sla.model_dump(mode="json", exclude_none=True)}
            routes = {**current.routes, "concurrency_limit": sla.concurrency_limit}
            return dataclasses.replace(current, spec=spec, routes=routes)

        saved = await self._edit(record.id, change)
        self.sla.set(record.id, sla)
        return saved

    async def _edit(
        self, dep_id: str, change: Callable[[DeploymentRecord], DeploymentRecord]
    ) -> DeploymentRecord:
        """A setting that needs no stack operation: re-read the record, change it, write its stack file (when
        the control plane made one) and save, one edit of a deployment at a time in this process (each file
        write is atomic, so edits from two processes never mix; the last one wins)."""
        async with self._edits.setdefault(dep_id, asyncio.Lock()):
            current = await self.get(dep_id)
            if current is None:
                raise NotManaged(dep_id)
            new = change(current)
            if new.stack and new.spec and not new.git:
                spec = validate_deployment(new.spec, self.catalog)
                await asyncio.to_thread(write_stack_file, spec, self.stacks_dir, new.stack)
            return await self.save(new)

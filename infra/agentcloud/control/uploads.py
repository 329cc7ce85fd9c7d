"""Model uploads (bring your own model): multipart as in the spec, and a resumable offset-based upload.

Bodies are streamed to a temporary file in the upload directory with a size cap and a sha256 computed while
writing; nothing is buffered in memory and no user-supplied path part is ever used (files are named by upload
id). A complete file is checked by the bounded GGUF reader and against the deployment's GPU, renamed into
place, then delivered to the deployment's droplets in the background. Statuses: pending_upload -> uploading ->
ready, or failed with a reason. Anything refused leaves nothing on disk."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

from agentcloud.byom import check_name, plan_gguf
from agentcloud.catalog import Catalog
from agentcloud.control.deployments import Deployments, HealthCheck
from agentcloud.errors import PlanError
from agentcloud.gateway import authz
from agentcloud.gateway.asgi import Request
from agentcloud.gateway.config import DeliveryConfig
from agentcloud.gateway.errors import GatewayError, bad_request, forbidden, not_found
from agentcloud.gateway.multipart import MultipartReader
from agentcloud.gateway.routing import Deployment, RouteTable
from agentcloud.gateway.schemas import UploadRequest, parse
from agentcloud.gguf import CHECK_MEMORY_BYTES, CHECK_TIMEOUT_S, GGUFError, read_gguf_bounded
from agentcloud.records import Status
from agentcloud.store import Store
from agentcloud.store.keys import KeyRecord, new_id
from agentcloud.store.offload import StoreThread

Deliver = Any  # (SshHost, local path, file name, settings, DeliveryConfig) -> remote sha256; blocking

log = logging.getLogger("agentcloud.gateway.uploads")
MAX_FIELD_BYTES = 1024
PART_TTL_S = 24 * 3600.0  # an abandoned resumable upload's part file is deleted after this
OFFSET_CT = "application/offset+octet-stream"


class Sink:
    """An upload's temporary file: append-only, size-capped, hashed as written."""

    def __init__(self, path: Path, limit: int, resume: bool = False) -> None:
        self.path = path
        self.limit = limit
        self.hash = hashlib.sha256()
        self.size = 0
        if resume and path.exists():
            with open(path, "rb") as f:  # a restarted gateway: rebuild the hash of what is already there
                while chunk := f.read(1 << 20):
                    self.hash.update(chunk)
                    self.size += len(chunk)
        self.file = open(path, "ab")  # noqa: SIM115 (closed by close())

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.limit:
            raise GatewayError(413, f"upload exceeds {self.limit} bytes", code="upload_too_large")
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)

    def close(self) -> None:
        self.file.close()

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Uploads:
    """The upload routes and the background delivery. ``deliver`` is the port to the droplets (SFTP)."""

    def __init__(
        self,
        store: Store,
        db: StoreThread,
        catalog: Catalog,
        routes: RouteTable,
        deployments: Deployments,
        healthy: HealthCheck,
        deliver: Deliver,
        directory: Path,
        max_bytes: int,
        max_body_bytes: int,
        delivery: DeliveryConfig,
    ) -> None:
        self.store, self.db, self.catalog, self.routes, self.deployments = (
            store,
            db,
            catalog,
            routes,
            deployments,
        )
        self.healthy, self.deliver, self.max_body_bytes = healthy, deliver, max_body_bytes
        self.dir = directory
        self.incoming = directory / ".incoming"
        self.max_bytes = max_bytes
        self.delivery = delivery
        self.sinks: dict[str, Sink] = {}
        self.busy: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.incoming.mkdir(parents=True, exist_ok=True)
        # the header check of an upload runs in a child process with these bounds (see gguf.py)
        self.check_timeout_s, self.check_memory_bytes = CHECK_TIMEOUT_S, CHECK_MEMORY_BYTES
        self.part_ttl_s = PART_TTL_S

    # -- shared steps ------------------------------------------------------------------------------------
    def _deployment(self, key: KeyRecord, dep_id: Any) -> Deployment:
        if not isinstance(dep_id, str) or not dep_id:
            raise bad_request("deployment_id: required", param="deployment_id")
        dep = authz.manage_deployment(key, self.routes.deployments.get(dep_id), dep_id)
        if not dep.hosts:
            raise GatewayError(
                409,
                f"deployment {dep.id} has no droplets the gateway can deliver to (scaled to "
                "zero, or registered without hosts)",
                code="deployment_unavailable",
            )
        return dep

    def _name(self, value: Any) -> str:
        if not isinstance(value, str):
            raise bad_request("name: required", param="name")
        try:
            return check_name(value)
        except ValueError as exc:
            raise bad_request(str(exc), param="name", code="invalid_name") from None

    async def _check_unique(self, org_id: str, name: str, own_id: str | None = None) -> None:
        existing = await self.db(self.store.upload_named, org_id, name)
        if existing is not None and existing["id"] != own_id:
            raise GatewayError(
                409,
                f"a model named {name} already exists ({existing['id']}, {existing['status']})",
                code="name_taken",
            )

    def _validate(self, path: Path, dep: Deployment, name: str) -> tuple[dict[str, Any], dict[str, str]]:
        """Header check and fit; raises GatewayError 422 with the reason."""
        try:
            info = read_gguf_bounded(str(path), self.check_timeout_s, self.check_memory_bytes)
        except GGUFError as exc:
            raise GatewayError(422, f"not an acceptable GGUF: {exc}", code="invalid_gguf") from None
        catalog = self.catalog
        gpu_name = dep.gpu_type or ""
        if gpu_name not in catalog.gpu_types or (dep.preset or "balanced") not in catalog.presets:
            raise GatewayError(
                409, f"deployment {dep.id} does not say which gpu type it runs on", code="unknown_gpu"
            )
        try:
            serving = plan_gguf(
                info,
                catalog.gpu_types[gpu_name],
                gpu_name,
                catalog.presets[dep.preset or "balanced"],
                f"{self.delivery.container_dir}/{name}.gguf",
                f"byom:{name}",
            )
        except PlanError as exc:
            raise GatewayError(422, str(exc), code="does_not_fit") from None
        summary = {
            **info.summary(),
            "ctx_size": serving.ctx_size,
            "parallel": serving.parallel,
            "max_kv_tokens": serving.fit.max_kv_tokens,
        }
        return summary, serving.env()

    async def _finish(
        self, upload_id: str, sink: Sink, dep: Deployment, name: str, expected_sha: str | None
    ) -> dict[str, Any]:
        """The body is complete: validate, keep, deliver in the background (a refusal leaves nothing)."""
        sink.close()
        digest = sink.hash.hexdigest()
        try:
            if expected_sha and expected_sha.lower() != digest:
                raise GatewayError(
                    422,
                    f"sha256 mismatch: declared {expected_sha}, received {digest}",
                    code="sha256_mismatch",
                )
            summary, settings = await asyncio.to_thread(self._validate, sink.path, dep, name)
        except GatewayError as err:
            sink.discard()
            await self.db(
                self.store.update_upload, upload_id, status="failed", reason=err.message, sha256=digest
            )
            raise
        final = self.dir / f"{upload_id}.gguf"
        os.replace(sink.path, final)  # atomic: same directory tree, same filesystem
        await self.db(
            self.store.update_upload,
            upload_id,
            status="uploading",
            sha256=digest,
            info=summary,
            received=sink.size,
        )
        task = asyncio.get_running_loop().create_task(
            self._deliver(upload_id, final, dep, name, settings, digest)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return await self.status_of(upload_id)

    async def _deliver(
        self, upload_id: str, path: Path, dep: Deployment, name: str, settings: dict[str, str], digest: str
    ) -> None:
        try:
            await self._to_every_host(dep, path, name, settings, digest)
            await self._wait_healthy(dep)
        except Exception as exc:  # any failure: recorded for the poller, never raised into the loop
            reason = f"delivery failed: {exc}"
            log.warning("upload %s: %s", upload_id, reason)
            await self.db(self.store.update_upload, upload_id, status="failed", reason=reason)
            return
        model_id = f"byom:{name}"
        record = await self.deployments.get(dep.id)
        if record is not None:  # the engines now answer for the uploaded model
            routes = {**record.routes, "model_id": model_id, "upstream_model": model_id}
            record = await self.deployments.save(dataclasses.replace(record, routes=routes))
        await self.db(self.store.update_upload, upload_id, status="ready", reason=None)
        if record is not None and record.status in (Status.PROVISIONING, Status.DEGRADED):
            # a deployment made through the API waits for its first model (see `redeliver`)
            await self.deployments.move(dep.id, Status.ACTIVE, f"{model_id} delivered: engine healthy", True)

    async def redeliver(self, dep: Deployment) -> tuple[str | None, str | None]:
        """After an up of a `byom:` deployment: its delivered model onto every droplet (a droplet whose
        model-cache volume already holds it gets only the settings, which live on its root disk), the engine
        restarted. Returns (the served model id, None), (None, None) when no model was delivered yet, or
        (None, the reason it could not be delivered)."""
        upload = await self.db(self.store.ready_upload, dep.id)
        if upload is None:
            return None, None
        name, path = str(upload["name"]), self.dir / f"{upload['id']}.gguf"
        if not path.exists():
            return None, f"byom:{name} is not on this gateway's disk ({path}): upload it again"
        try:
            _, settings = await asyncio.to_thread(self._validate, path, dep, name)
            await self._to_every_host(dep, path, name, settings, upload["sha256"], skip_held=True)
        except Exception as exc:  # the reason, for the deployment's history
            message = exc.message if isinstance(exc, GatewayError) else str(exc)
            return None, f"{type(exc).__name__}: {message}"[:200]
        return f"byom:{name}", None

    async def _to_every_host(
        self,
        dep: Deployment,
        path: Path,
        name: str,
        settings: dict[str, str],
        digest: str,
        skip_held: bool = False,
    ) -> None:
        """The GGUF and its settings onto each droplet over SFTP, checked by the sum the droplet computes;
        ``skip_held``: a droplet already holding the file (its marker says so) gets only the settings."""
        for host in dep.hosts:
            remote = await asyncio.to_thread(
                self.deliver,
                host,
                str(path),
                f"{name}.gguf",
                settings,
                self.delivery,
                digest if skip_held else None,
            )
            if remote != digest:
                raise RuntimeError(f"{host.host} holds sha256 {remote}, expected {digest}")

    async def _wait_healthy(self, dep: Deployment) -> None:
        if not await self.healthy([t.base_url for t in dep.targets]):
            raise TimeoutError(
                f"the engine did not answer /health within {self.delivery.health_timeout_s:.0f} s"
            )

    async def status_of(self, upload_id: str) -> dict[str, Any]:
        record = await self.db(self.store.upload, upload_id)
        assert record is not None
        return {
            "id": record["id"],
            "object": "model.upload",
            "name": record["name"],
            "model": f"byom:{record['name']}",
            "deployment_id": record["deployment_id"],
            "status": record["status"],
            "size": record["size"],
            "offset": record["received"],
            "sha256": record["sha256"],
            "reason": record["reason"],
            "gguf": record["info"],
        }

    # -- multipart (the spec's route) -----------------------------------------------------------------------
    async def multipart(self, req: Request) -> None:
        key = req.caller
        if not authz.manages_any(key):  # before a byte of the body is read
            raise forbidden("uploading a model needs an admin key (or deployment:manage on an org)")
        length = req.header(b"content-length")
        if length and length.isdigit() and int(length) > self.max_bytes + 64 * 1024:
            raise GatewayError(413, f"upload exceeds {self.max_bytes} bytes", code="upload_too_large")
        upload_id = new_id("upl")
        sink = Sink(self.incoming / f"{upload_id}.part", self.max_bytes)
        dep: Deployment | None = None
        try:
            form = MultipartReader(req.header(b"content-type") or "", "file", sink.write, MAX_FIELD_BYTES)
            while True:
                message = await req.receive()
                if message["type"] == "http.disconnect":
                    req.disconnected = True
                    raise asyncio.CancelledError
                form.feed(message.get("body", b""))
                if dep is None and "deployment_id" in form.fields:  # authorized before the file's bytes
                    dep = self._deployment(key, form.fields["deployment_id"])
                elif dep is None and (form.files or sink.size):
                    raise bad_request(
                        "deployment_id: send it before the file part (the right to upload is checked first)",
                        param="deployment_id",
                    )
                if not message.get("more_body", False):
                    break
            form.finish()
            if form.files != 1 or sink.size == 0:
                raise bad_request("file: required, the GGUF to upload", param="file")
            name = self._name(form.fields.get("name", ""))
            dep = dep or self._deployment(key, form.fields.get("deployment_id", ""))
            await self._check_unique(dep.org_id, name)
        except BaseException:
            sink.discard()
            raise
        await self.db(self.store.create_upload, upload_id, dep.org_id, key.id, name, dep.id, sink.size)
        sha = form.fields.get("sha256") or None
        await req.json(await self._finish(upload_id, sink, dep, name, sha), status=202)

    # -- resumable ------------------------------------------------------------------------------------------
    async def create(self, req: Request) -> None:
        key = req.caller
        body = parse(UploadRequest, await req.json_object(self.max_body_bytes), "upload")
        name = self._name(body.name)
        dep = self._deployment(key, body.deployment_id)
        size, sha = body.size, body.sha256
        if size > self.max_bytes:
            raise bad_request(
                f"size: required, 1 to {self.max_bytes} bytes", param="size", code="invalid_size"
            )
        await self._check_unique(dep.org_id, name)
        upload_id = new_id("upl")
        await self.db(self.store.create_upload, upload_id, dep.org_id, key.id, name, dep.id, size)
        if sha:
            await self.db(self.store.update_upload, upload_id, info={"expected_sha256": sha.lower()})
        (self.incoming / f"{upload_id}.part").touch()
        status = await self.status_of(upload_id)
        await req.json({**status, "upload_url": f"/api/v1/public/models/uploads/{upload_id}"}, status=201)

    async def _owned(self, req: Request, key: KeyRecord) -> dict[str, Any]:
        """The upload, which the caller may read, write or cancel: the same right as creating it (managing its
        deployment); an upload the caller's key may not even see is 404."""
        upload_id = req.params["upload_id"]
        record = await self.db(self.store.upload, upload_id)
        missing = not_found(f"upload {upload_id} not found", code="upload_not_found")
        if record is None:
            raise missing
        dep_id = record["deployment_id"]
        try:
            authz.manage_deployment(key, self.routes.deployments.get(dep_id), dep_id)
        except GatewayError as err:
            raise (missing if err.status == 404 else err) from None
        return record

    async def append(self, req: Request) -> None:
        key = req.caller
        record = await self._owned(req, key)
        upload_id = record["id"]
        if record["status"] not in ("pending_upload", "uploading") or record["sha256"]:
            raise GatewayError(
                409, f"upload {upload_id} is {record['status']}; nothing more to send", code="upload_closed"
            )
        if (req.header(b"content-type") or "").split(";")[0].strip() != OFFSET_CT:
            raise GatewayError(415, f"send the bytes as {OFFSET_CT}", code="unsupported_media_type")
        offset_text = req.header(b"upload-offset") or ""
        if not offset_text.isdigit():
            raise bad_request("Upload-Offset header: required, the byte offset this chunk starts at")
        if upload_id in self.busy:
            raise GatewayError(409, "another request is writing this upload", code="upload_busy")
        self.busy.add(upload_id)
        try:
            sink = self.sinks.get(upload_id) or Sink(
                self.incoming / f"{upload_id}.part", int(record["size"]), resume=True
            )
            self.sinks[upload_id] = sink
            if int(offset_text) != sink.size:
                raise GatewayError(
                    409,
                    f"offset mismatch: the upload is at {sink.size}",
                    code="offset_mismatch",
                    headers={"Upload-Offset": str(sink.size)},
                )
            if record["status"] == "pending_upload":
                await self.db(self.store.update_upload, upload_id, status="uploading")
            try:
                while True:
                    message = await req.receive()
                    if message["type"] == "http.disconnect":
                        break  # keep what arrived: the client resumes from Upload-Offset
                    sink.write(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
            finally:
                sink.file.flush()
                await self.db(self.store.update_upload, upload_id, received=sink.size)
            if sink.size < int(record["size"]):
                await req.respond(204, b"", extra=[(b"upload-offset", str(sink.size).encode())])
                return
            del self.sinks[upload_id]
            dep = self.routes.deployments.get(record["deployment_id"])
            if dep is None:
                sink.discard()
                raise GatewayError(
                    409, f"deployment {record['deployment_id']} is gone", code="deployment_unavailable"
                )
            expected = (record["info"] or {}).get("expected_sha256")
            await req.json(await self._finish(upload_id, sink, dep, record["name"], expected), status=202)
        finally:
            self.busy.discard(upload_id)

    async def status(self, req: Request) -> None:
        key = req.caller
        record = await self._owned(req, key)
        status = await self.status_of(record["id"])
        await req.respond(
            200,
            orjson.dumps(status),
            extra=[(b"upload-offset", str(status["offset"]).encode())],
        )

    async def cancel(self, req: Request) -> None:
        key = req.caller
        record = await self._owned(req, key)
        if record["status"] not in ("pending_upload", "uploading") or record["sha256"]:
            raise GatewayError(409, f"upload {record['id']} is {record['status']}", code="upload_closed")
        if record["id"] in self.busy:
            raise GatewayError(
                409, "a request is writing this upload; cancel it once that ends", code="upload_busy"
            )
        sink = self.sinks.pop(record["id"], None)
        if sink is not None:
            sink.discard()
        with contextlib.suppress(FileNotFoundError):
            (self.incoming / f"{record['id']}.part").unlink()
        await self.db(
            self.store.update_upload, record["id"], status="failed", reason="cancelled by the client"
        )
        await req.json(await self.status_of(record["id"]))

    async def expire_parts(self, now: float | None = None) -> list[str]:
        """Resumable uploads untouched for ``part_ttl_s``: their partial files are deleted and the uploads
        marked failed (the client may start again). Each process sweeps the parts on its own disk."""
        now = time.time() if now is None else now
        expired: list[str] = []
        for part in self.incoming.glob("*.part"):
            upload_id = part.stem
            try:
                idle = now - part.stat().st_mtime
            except FileNotFoundError:
                continue
            if idle < self.part_ttl_s or upload_id in self.busy:
                continue
            sink = self.sinks.pop(upload_id, None)
            if sink is not None:
                sink.close()
            part.unlink(missing_ok=True)
            record = await self.db(self.store.upload, upload_id)
            if record is not None and record["status"] in ("pending_upload", "uploading"):
                reason = f"expired: no bytes received for {self.part_ttl_s / 3600:g} h; start a new upload"
                await self.db(self.store.update_upload, upload_id, status="failed", reason=reason)
            expired.append(upload_id)
        return expired

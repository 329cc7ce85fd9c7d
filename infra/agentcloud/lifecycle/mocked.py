"""Stack operations that run the real Pulumi program in this process, under Pulumi's mocks, with its droplets
converged onto a DigitalOcean-compatible v2 API through pydo (a local stand-in or twin of DigitalOcean; the
real API works the same way, though `pulumi up` is what users run there).

`up` plans the stack file exactly as `pulumi up` does (same program, same stack config), then for every
droplet the program declares: one with the same name and size in that region is kept, any other is created
(``POST /v2/droplets``, whose errors, such as 422 "Size is not available in this region.", fail the up as they
would fail Pulumi's); droplets of the deployment that the program no longer declares are deleted. The VPC,
the model-cache volumes (which outlive droplets), their attachments, the firewall and tags are converged the
same way (kept by name, else created; the firewall's rules and droplets set as declared). The SSH host key is
a stand-in pair here.
Capacity failures move to the stack's fallbacks (lifecycle/placement.py). One program runs at a time per
process: Pulumi's runtime settings are global."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.settings import SETTINGS
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from agentcloud import PULUMI_PROJECT
from agentcloud.catalog import load_catalog
from agentcloud.lifecycle.placement import up_with_fallbacks
from agentcloud.program import LIVE_REPLICAS
from agentcloud.spec import PLACEMENT_KEY, load_stack

DROPLET = "digitalocean:index/droplet:Droplet"
VPC = "digitalocean:index/vpc:Vpc"
VOLUME = "digitalocean:index/volume:Volume"
ATTACHMENT = "digitalocean:index/volumeAttachment:VolumeAttachment"
FIREWALL = "digitalocean:index/firewall:Firewall"
TAG = "digitalocean:index/tag:Tag"
DYNAMIC = "pulumi-python:dynamic:Resource"
_LOCK = threading.Lock()
_QUIET = logging.getLogger("agentcloud.lifecycle.mocked.engine")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False  # a failed create is reported once, by the up, not as the engine's traceback


class ConvergingMocks(pulumi.runtime.Mocks):
    """Pulumi's mocks, with droplets made real on a v2 API (kept when they exist, created when not)."""

    def __init__(
        self, client: Any, tag: str, extra: dict[str, Any], keys: dict[str, tuple[str, str]] | None = None
    ) -> None:
        self.client, self.tag, self.extra = client, tag, extra
        self.keys = keys if keys is not None else {}
        self.existing = {d["name"]: d for d in _droplets(client, tag, extra)}
        self.declared: set[int] = set()
        self.volumes: set[str] = set()
        self._ids = itertools.count(1)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == DROPLET:
            droplet = self._droplet(args.inputs)
            self.declared.add(int(droplet["id"]))
            v4 = {n["type"]: n["ip_address"] for n in droplet.get("networks", {}).get("v4", [])}
            state.update(ipv4Address=v4.get("public"), ipv4AddressPrivate=v4.get("private"), status="active")
            return str(droplet["id"]), state
        if args.typ == VPC:
            vpc = self._vpc(args.inputs)
            state.update(ipRange=vpc.get("ip_range"), urn=f"do:vpc:{vpc['id']}")
            return str(vpc["id"]), state
        if args.typ == VOLUME:
            volume = self._volume(args.inputs)
            self.volumes.add(str(volume["id"]))
            return str(volume["id"]), state
        if args.typ == ATTACHMENT:
            self._attach(int(args.inputs["dropletId"]), str(args.inputs["volumeId"]))
            return f"{args.inputs['dropletId']}-{args.inputs['volumeId']}", state
        if args.typ == FIREWALL:
            return str(self._firewall(args.inputs)["id"]), state
        if args.typ == TAG:
            self.client.tags.create(body={"name": args.inputs["name"]}, **self.extra)
            return str(args.inputs["name"]), state
        if (
            args.typ == DYNAMIC
        ):  # the SSH host key: generated once per stack and kept, as Pulumi's state keeps it
            if args.name not in self.keys:
                from agentcloud.components.host_key import generate_host_key

                self.keys[args.name] = generate_host_key()
            private, public = self.keys[args.name]
            state.update(private_openssh=private, public_openssh=public)
        return f"{args.name}-{next(self._ids)}", state

    def _vpc(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The VPC of that name, kept when it exists, created when not (droplets name it by id)."""
        found = self.client.vpcs.list(per_page=200, **self.extra).get("vpcs") or []
        same = next((v for v in found if v["name"] == inputs["name"]), None)
        if same is not None:
            return dict(same)
        body = {
            "name": inputs["name"],
            "region": inputs["region"],
            "description": inputs.get("description", ""),
        }
        return dict(self.client.vpcs.create(body=body, **self.extra)["vpc"])

    def _volume(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The model-cache volume of that name in that region, kept when it exists (it outlives droplets)."""
        found = self.client.volumes.list(name=inputs["name"], per_page=200, **self.extra).get("volumes") or []
        same = next((v for v in found if v["region"]["slug"] == inputs["region"]), None)
        if same is not None:
            return dict(same)
        body = {
            "name": inputs["name"],
            "region": inputs["region"],
            "size_gigabytes": int(inputs["size"]),
            "filesystem_type": inputs.get("initialFilesystemType", ""),
            "filesystem_label": inputs.get("initialFilesystemLabel", ""),
            "description": inputs.get("description", ""),
            "tags": sorted({*inputs.get("tags", []), self.tag}),
        }
        return dict(self.client.volumes.create(body=body, **self.extra)["volume"])

    def _attach(self, droplet_id: int, volume_id: str) -> None:
        volume = self.client.volumes.get(volume_id, **self.extra)["volume"]
        if droplet_id not in volume.get("droplet_ids", []):
            body = {"type": "attach", "droplet_id": droplet_id, "region": volume["region"]["slug"]}
            self.client.volume_actions.post_by_id(volume_id, body, **self.extra)

    def _firewall(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The deployment's firewall, its rules and droplets as the program declares them (kept by name)."""

        def ports(rule: dict[str, Any]) -> dict[str, Any]:
            return {"protocol": rule["protocol"], "ports": rule.get("portRange") or "0"}

        body = {
            "name": inputs["name"],
            "droplet_ids": [int(i) for i in inputs.get("dropletIds", [])],
            "inbound_rules": [
                {
                    **ports(r),
                    "sources": {
                        "addresses": r.get("sourceAddresses") or [],
                        "tags": r.get("sourceTags") or [],
                    },
                }
                for r in inputs.get("inboundRules", [])
            ],
            "outbound_rules": [
                {**ports(r), "destinations": {"addresses": r.get("destinationAddresses") or []}}
                for r in inputs.get("outboundRules", [])
            ],
            "tags": [],
        }
        found = self.client.firewalls.list(per_page=200, **self.extra).get("firewalls") or []
        same = next((f for f in found if f["name"] == inputs["name"]), None)
        if same is not None:
            return dict(self.client.firewalls.update(same["id"], body, **self.extra)["firewall"])
        return dict(self.client.firewalls.create(body=body, **self.extra)["firewall"])

    def _droplet(self, inputs: dict[str, Any]) -> dict[str, Any]:
        name = inputs["name"]
        found = self.existing.get(name)
        if found and found["size_slug"] == inputs["size"] and found["region"]["slug"] == inputs["region"]:
            return found
        body = {
            "name": name,
            "region": inputs["region"],
            "size": inputs["size"],
            "image": inputs["image"],
            "user_data": inputs.get("userData"),
            "tags": sorted({*inputs.get("tags", []), self.tag}),
            "vpc_uuid": inputs.get("vpcUuid"),
        }
        return dict(self.client.droplets.create(body=body, **self.extra)["droplet"])

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def _droplets(client: Any, tag: str, extra: dict[str, Any]) -> list[dict[str, Any]]:
    return list(client.droplets.list(tag_name=tag, per_page=200, **extra).get("droplets") or [])


class ProgramOps:
    """`StackOps` for a Pulumi project folder (its stack files where its Pulumi.yaml says), against a v2 API
    at ``endpoint``."""

    def __init__(self, workspace: Path, endpoint: str, token: str) -> None:
        import pydo

        from agentcloud.project import project_at

        self.workspace = workspace
        self.stacks = project_at(workspace).stacks_dir
        self.client = pydo.Client(token=token, endpoint=endpoint)
        # plain http only for a local API; the token still goes only where it was told
        self.extra: dict[str, Any] = {"enforce_https": False} if endpoint.startswith("http://") else {}
        # What Pulumi's state would keep, per stack: where it landed, its host key, its last outputs. Kept in
        # files (0600: the host key is a secret) so that one CLI run sees what the last one did.
        data = os.environ.get("AGENTCLOUD_DATA_DIR") or str(Path.home() / ".local" / "share" / "agentcloud")
        self.state_dir = Path(data) / "program-ops"
        self.placements: dict[str, int] = {}
        self.host_keys: dict[str, dict[str, tuple[str, str]]] = {}
        self.outputs: dict[str, dict[str, Any]] = {}

    def preflight(self) -> None:
        return None

    def _tag(self, stack: str) -> str:
        """The droplets' tag of a stack. DigitalOcean's tags take letters, digits, ':', '-' and '_', and
        stack names never hold ':', so their dots (api.<org>.<name>) become colons, one to one."""
        return f"agentcloud:stack:{stack.replace('.', ':')}"

    def _state_file(self, stack: str) -> Path:
        return self.state_dir / f"{stack}.json"

    def _load(self, stack: str) -> None:
        """The stack's state as the last operation left it, from any process (a CLI up and the gateway's
        control plane share it, as they share a Pulumi backend)."""
        path = self._state_file(stack)
        if not path.exists():
            return
        saved = json.loads(path.read_text())
        self.placements[stack] = int(saved.get("placement", 0))
        self.host_keys[stack] = {k: (v[0], v[1]) for k, v in saved.get("host_keys", {}).items()}
        self.outputs[stack] = dict(saved.get("outputs") or {})

    def _save(self, stack: str) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        saved = {
            "placement": self.placements.get(stack, 0),
            "host_keys": self.host_keys.get(stack, {}),
            "outputs": self.outputs.get(stack, {}),
        }
        path = self._state_file(stack)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(saved, f)

    def up(
        self,
        stack: str,
        progress: Callable[[str], None],
        replicas: int | None = None,
        keep_live: bool = False,
    ) -> dict[str, Any]:
        """``replicas``: the live count to run with (a scaler's); ``keep_live``: the count running now (a
        GitOps up of a stack file whose `replicas` is only where it started); neither: the file's count (the
        control plane's own stack files, which it keeps current)."""
        spec = load_stack(self.stacks / f"Pulumi.{stack}.yaml", load_catalog())
        self._load(stack)
        live = replicas
        if live is None and keep_live:
            live = len(_droplets(self.client, self._tag(stack), self.extra)) or None
        outputs = up_with_fallbacks(
            spec,
            lambda index: self._run(stack, index, progress, live),
            progress,
            start=self.placements.get(stack, 0),
        )
        self.placements[stack] = int(outputs["placement"]["index"])  # later ups stay where it landed
        self.outputs[stack] = outputs
        self._save(stack)
        return outputs

    def refresh(self, stack: str, progress: Callable[[str], None]) -> dict[str, Any]:
        """`pulumi refresh`: the stack's last outputs, with its endpoints as the API has them now (a droplet
        deleted behind the system's back is missing from them; nothing is created)."""
        self._load(stack)
        last = dict(self.outputs.get(stack) or {})
        known = {str(e.get("droplet_id")): e for e in last.get("endpoints") or []}
        alive = {str(d["id"]) for d in _droplets(self.client, self._tag(stack), self.extra)}
        progress(f"refreshing {stack}: {len(alive)} of {len(known)} droplet(s) exist")
        last["endpoints"] = [e for key, e in known.items() if key in alive]
        return last

    def destroy(self, stack: str, keep_model_cache: bool, progress: Callable[[str], None]) -> None:
        """Droplets, then the firewall and VPC they used; the model-cache volumes only when asked (they are
        protected, as in the program)."""
        droplets = _droplets(self.client, self._tag(stack), self.extra)
        ids = {int(d["id"]) for d in droplets}
        vpcs = {str(d["vpc_uuid"]) for d in droplets if d.get("vpc_uuid")}
        firewalls = [
            f
            for f in self.client.firewalls.list(per_page=200, **self.extra).get("firewalls") or []
            if ids & set(f.get("droplet_ids") or [])
        ]
        for droplet in droplets:
            progress(f"deleting droplet {droplet['name']}")
            self.client.droplets.destroy(droplet_id=droplet["id"], **self.extra)
        for firewall in firewalls:
            progress(f"deleting firewall {firewall['name']}")
            self.client.firewalls.delete(firewall["id"], **self.extra)
        for vpc in vpcs:
            self.client.vpcs.delete(vpc, **self.extra)
        volumes = [
            v
            for v in self.client.volumes.list(per_page=200, **self.extra).get("volumes") or []
            if self._tag(stack) in (v.get("tags") or [])
        ]
        for volume in volumes:
            if keep_model_cache:
                progress(f"keeping model cache {volume['name']} (protected)")
            else:
                progress(f"deleting model cache {volume['name']}")
                self.client.volumes.delete(volume["id"], **self.extra)
        self.placements.pop(stack, None)
        self.outputs.pop(stack, None)
        self.host_keys.pop(stack, None)
        self._state_file(stack).unlink(missing_ok=True)

    def _run(
        self, stack: str, index: int, progress: Callable[[str], None], live: int | None = None
    ) -> dict[str, Any]:
        config = yaml.safe_load((self.stacks / f"Pulumi.{stack}.yaml").read_text())["config"]
        progress(f"Updating ({stack})")
        with _LOCK:
            from agentcloud.program import run

            own_loop = None
            if threading.current_thread() is not threading.main_thread():  # a job's worker thread
                own_loop = asyncio.new_event_loop()  # Pulumi's runtime drives its futures on this one
                asyncio.set_event_loop(own_loop)

            mocks = ConvergingMocks(
                self.client, self._tag(stack), self.extra, self.host_keys.setdefault(stack, {})
            )
            pulumi.runtime.set_mocks(mocks, project=PULUMI_PROJECT, stack=stack, preview=False, logger=_QUIET)
            values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
            values[PLACEMENT_KEY] = str(index)
            pulumi.runtime.set_all_config(values)
            exported: dict[str, Any] = {}
            real_export = pulumi.export
            saved = {k: os.environ.get(k) for k in ("AGENTCLOUD_PROJECT", LIVE_REPLICAS)}
            pulumi.export = lambda name, value: exported.__setitem__(name, value)  # type: ignore[assignment]
            os.environ["AGENTCLOUD_PROJECT"] = str(self.workspace)
            os.environ.pop(LIVE_REPLICAS, None)
            if live is not None:
                os.environ[LIVE_REPLICAS] = str(live)
            try:
                SETTINGS.rpc_manager.clear()
                SETTINGS.outputs.clear()
                result: dict[str, Any] = {}

                def program() -> None:
                    run()
                    resolved: dict[str, Any] | None = _sync_await(pulumi.Output.from_input(exported).future())
                    result.update(resolved or {})

                _sync_await(run_pulumi_func(program))
            finally:
                if own_loop is not None:
                    asyncio.set_event_loop(None)
                    own_loop.close()
                pulumi.export = real_export
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
        for droplet in _droplets(self.client, self._tag(stack), self.extra):
            if int(droplet["id"]) not in mocks.declared:
                progress(f"deleting droplet {droplet['name']} (no longer declared)")
                self.client.droplets.destroy(droplet_id=droplet["id"], **self.extra)
        return result


def from_env(workspace: Path) -> ProgramOps:
    """AGENTCLOUD_STACK_OPS=agentcloud.lifecycle.mocked:from_env: the API at DIGITALOCEAN_API_ENDPOINT (a
    local stand-in or twin of DigitalOcean) with DIGITALOCEAN_TOKEN."""
    from agentcloud.errors import InfraError

    endpoint = os.environ.get("DIGITALOCEAN_API_ENDPOINT")
    token = os.environ.get("DIGITALOCEAN_TOKEN") or os.environ.get("DIGITALOCEAN_ACCESS_TOKEN")
    if not endpoint or not token:
        raise InfraError(
            "agentcloud.lifecycle.mocked needs DIGITALOCEAN_API_ENDPOINT (the API to converge onto) and "
            "DIGITALOCEAN_TOKEN"
        )
    return ProgramOps(workspace, endpoint, token)

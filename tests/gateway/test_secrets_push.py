"""Issue 9: the engine's secrets reach every droplet the control plane makes, with no manual step: after
each up (create, scale: the path the autoscaler and wake take too) the control plane writes the engine's
environment file over SFTP, host key pinned, to a real OpenSSH server standing in for the droplets; a droplet
it cannot reach leaves the deployment degraded with that reason, never active on an engine without its key."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agentcloud.catalog import Catalog
from agentcloud.gateway.routing import RouteTable
from agentcloud.store import Store
from tests.gateway.fake_upstream import FakeUpstream
from tests.gateway.harness import Keys, Running, make_gateway, running, wait_for
from tests.gateway.stand_in_ops import SPEC, FakeOps
from tests.sshd import SshServer, ssh_server

API = "/api/v1/public/deployments"
ENGINE_KEY = "engine-key-of-this-gateway"


class DropletOps(FakeOps):
    """FakeOps whose droplets are reached over SSH at the test's OpenSSH server, with its pinned host key."""

    def __init__(self, port: int, stacks: Path, sshd: SshServer, host_key: str) -> None:
        super().__init__(port, stacks)
        self.sshd, self.host_key = sshd, host_key

    def up(self, stack: str, progress: Any) -> dict[str, Any]:
        out = super().up(stack, progress)
        out["host_public_key"] = self.host_key
        for e in out["endpoints"]:
            e["ssh_port"] = self.sshd.port
        return out


@pytest.fixture
def world(
    tmp_path: Path, catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream
) -> Iterator[tuple[Running, DropletOps, Path, Keys]]:
    with ssh_server(tmp_path / "sshd") as sshd:
        stacks = tmp_path / "stacks"
        stacks.mkdir()
        port = int(upstream.base_url.split(":")[2].split("/")[0])
        ops = DropletOps(port, stacks, sshd, sshd.host_public_key)
        env_file = tmp_path / "droplet" / "engine.env"
        env_file.parent.mkdir()
        gateway = make_gateway(
            catalog,
            store,
            RouteTable(),
            tmp_path,
            stack_ops=ops,
            stacks_dir=stacks,
            engine_api_key=ENGINE_KEY,
            hf_token="hf_secret_token",
            ssh_key=sshd.client_key,
            engine_env_path=str(env_file),
        )
        with running(gateway) as r:
            yield r, ops, env_file, keys


def _call(r: Running, key: str, method: str, path: str = "", **kw: Any) -> requests.Response:
    return requests.request(
        method, f"{r.url}{API}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=15, **kw
    )


def _status(r: Running, key: str, dep_id: str, status: str) -> dict[str, Any]:
    assert wait_for(lambda: _call(r, key, "GET", f"/{dep_id}").json()["status"] == status, 20), _call(
        r, key, "GET", f"/{dep_id}"
    ).json()
    return dict(_call(r, key, "GET", f"/{dep_id}").json())


def test_create_and_scale_deliver_the_engine_secrets(
    world: tuple[Running, DropletOps, Path, Keys], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, _, env_file, keys = world
    monkeypatch.setenv("AGENTCLOUD_ENGINE_API_KEY", ENGINE_KEY)  # what the data plane sends to the engines
    made = _call(r, keys.admin, "POST", json=SPEC)
    assert made.status_code == 202, made.text
    dep = _status(r, keys.admin, made.json()["id"], "active")
    text = env_file.read_text()
    assert f"VLLM_API_KEY={ENGINE_KEY}" in text and "HF_TOKEN=hf_secret_token" in text
    assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600
    log = " ".join(dep["job"]["log_tail"] if dep.get("job") else [])
    assert ENGINE_KEY not in log and "hf_secret_token" not in log
    env_file.unlink()
    scaled = _call(
        r, keys.admin, "PATCH", f"/{dep['id']}/scaling", json={"min_replicas": 2, "max_replicas": 3}
    )
    assert scaled.status_code == 202, scaled.text
    _status(r, keys.admin, dep["id"], "active")
    assert f"VLLM_API_KEY={ENGINE_KEY}" in env_file.read_text()  # the new droplets got it too


def test_a_droplet_that_cannot_be_reached_is_degraded_with_the_reason(
    world: tuple[Running, DropletOps, Path, Keys],
) -> None:
    r, ops, env_file, keys = world
    ops.host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    made = _call(r, keys.admin, "POST", json=SPEC)
    dep = _status(r, keys.admin, made.json()["id"], "degraded")
    reason = dep["lifecycle"]["history"][-1]["reason"]
    assert reason.startswith("create: secrets not delivered:") and ENGINE_KEY not in reason, reason
    assert not env_file.exists()

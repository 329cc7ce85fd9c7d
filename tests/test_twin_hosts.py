"""The twin's droplets are real hosts (issue 9): a droplet created through the API boots from the
user-data the program renders into a network namespace on its VPC's bridge, runs sshd with the pinned host
key, takes the engine's secrets over SFTP, starts the rendered engine script (its `docker run` mapped onto
llama-server), and admits the engine port only from the VPC's gateway address. Needs root, ip, iptables,
sshd and llama-server."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from agentcloud.catalog import Catalog
from agentcloud.planner import plan
from agentcloud.remote import Target, push_env
from agentcloud.render import HostKey, render
from agentcloud.spec import load_stack
from agentcloud.tiny_gguf import write_tiny_gguf
from agentcloud.twin.api import Twin, serve_twin
from agentcloud.twin.hosts import Hosts
from tests.conftest import STACKS
from tests.gateway.test_llamacpp import LLAMA_SERVER

TOKEN = "dop_v1_twin_hosts"
SIZES = [{"slug": "gpu-l40sx1-48gb", "available": True, "regions": ["tor1"], "price_hourly": 1.57}]
needs = [shutil.which(c) for c in ("ip", "iptables")] + [shutil.which("sshd") or "/usr/sbin/sshd"]
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(needs) or not LLAMA_SERVER.exists(),
    reason="needs root, ip, iptables, sshd and llama-server (setup provides them)",
)


def generated_key() -> tuple[str, str]:
    from agentcloud.components.host_key import generate_host_key

    return generate_host_key()


@contextmanager
def twin_with_hosts(
    tmp_path: Path, token: str, sizes: list[dict[str, Any]], prefix: str
) -> Iterator[tuple[Twin, Hosts, str, str]]:
    """The twin with real droplet hosts, served; yields it, its hosts, its URL and the SSH key (a file) that
    the droplets authorize (the gateway's). Every namespace and link is gone afterwards."""
    client_private, client_public = generated_key()
    client_key = tmp_path / "client_key"
    client_key.write_text(client_private)
    client_key.chmod(0o600)
    hosts = Hosts(
        folder=tmp_path / "droplets",
        authorized_keys=client_public + "\n",
        llama_server=str(LLAMA_SERVER),
        model=str(write_tiny_gguf(tmp_path / "tiny.gguf")),
        prefix=f"{prefix}{os.getpid() % 1000}x",
    )
    twin = Twin(token=token, sizes=sizes)
    hosts.attach(twin)
    try:
        with serve_twin(twin) as url:
            yield twin, hosts, url, str(client_key)
    finally:
        hosts.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Twin, Hosts, Any, str, Path]]:
    import pydo

    with twin_with_hosts(tmp_path, TOKEN, SIZES, "actw") as (twin, hosts, url, client_key):
        yield twin, hosts, pydo.Client(token=TOKEN, endpoint=url), client_key, tmp_path


def _wait(check: Any, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.2)
    return False


def test_a_droplet_boots_from_its_user_data_and_serves_once_its_secrets_arrive(
    world: tuple[Twin, Hosts, Any, str, Path], catalog: Catalog
) -> None:
    _, hosts, client, client_key, _ = world
    http = {"enforce_https": False}
    serving = plan(load_stack(STACKS / "Pulumi.gguf-8b.yaml", catalog), catalog)
    private, public = generated_key()
    user_data = render(serving, HostKey(private, public)).user_data
    vpc = client.vpcs.create(body={"name": "v", "region": "tor1", "ip_range": "10.231.7.0/24"}, **http)["vpc"]
    body = {
        "name": "gguf-8b-0",
        "region": "tor1",
        "size": "gpu-l40sx1-48gb",
        "image": "gpu-h100x1-base",
        "user_data": user_data,
        "vpc_uuid": vpc["id"],
    }
    droplet = client.droplets.create(body=body, **http)["droplet"]
    address = next(n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "private")
    url = f"http://{address}:8000"
    time.sleep(1.0)
    # the engine waits for its secrets: nothing listens yet
    assert not _wait(lambda: requests.get(f"{url}/health", timeout=1).status_code == 200, 2)
    target = Target(host=address, host_public_key=public, port=22)
    assert _wait(
        lambda: push_env(
            [target], {"LLAMA_API_KEY": "k-twin"}, "/etc/agentcloud/engine.env", key_filename=client_key
        ),
        20,
    )
    assert _wait(lambda: requests.get(f"{url}/health", timeout=1).status_code == 200, 60), (
        hosts.folder / hosts.hosts[droplet["id"]].ns / "engine.log"
    ).read_text()[-2000:]
    models = requests.get(f"{url}/v1/models", headers={"Authorization": "Bearer k-twin"}, timeout=5).json()
    assert models["data"][0]["id"] == serving.model_id
    assert (
        requests.get(f"{url}/v1/models", timeout=5).status_code == 401
    )  # the engine's key is the pushed one
    # the firewall: another host in the VPC cannot reach the engine port
    intruder = f"{hosts.prefix}i"
    subprocess.run(["ip", "netns", "add", intruder], check=True)
    try:
        subprocess.run(
            ["ip", "link", "add", f"{intruder}v", "type", "veth", "peer", "name", "eth0", "netns", intruder],
            check=True,
        )
        subprocess.run(
            ["ip", "link", "set", f"{intruder}v", "master", hosts.bridges["10.231.7.0/24"], "up"], check=True
        )
        subprocess.run(["ip", "-n", intruder, "addr", "add", "10.231.7.200/24", "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", intruder, "link", "set", "eth0", "up"], check=True)
        probe = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                intruder,
                "python3",
                "-c",
                f"import socket; s=socket.socket(); s.settimeout(2); s.connect(('{address}', 8000))",
            ],
            capture_output=True,
            timeout=20,
        )
        assert probe.returncode != 0
    finally:
        subprocess.run(["ip", "netns", "del", intruder], capture_output=True)
    client.droplets.destroy(droplet["id"], **http)
    assert droplet["id"] not in hosts.hosts
    assert hosts.hosts == {}

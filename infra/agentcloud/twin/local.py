"""`agentcloud local up`: the whole product on one machine, for a person with no cloud account.

The DigitalOcean twin (its API on 127.0.0.1, its droplets real hosts in network namespaces, llama.cpp on a
tiny generated GGUF standing in for the engines) and one gateway process (both planes) whose control plane
runs the real Pulumi program against the twin (`agentcloud.lifecycle.mocked`). The gateway's store, stack
files and keys live in one folder, wiped at each start: a local cloud lasts as long as the command. Needs root
(namespaces, iptables), `ip`, `iptables`, `sshd` and a llama-server binary."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentcloud.catalog import Catalog
from agentcloud.errors import InfraError

MARKER = ".agentcloud-local"
LLAMA_SERVER_HINT = (
    "install llama.cpp's llama-server (`brew install llama.cpp`, a release from "
    "github.com/ggml-org/llama.cpp/releases, or `bash scripts/build-llama-server.sh` in agentcloud's "
    "repository) and put it on PATH or pass --llama-server"
)


@dataclass(frozen=True)
class LocalCloud:
    """What a running local cloud tells its user."""

    twin_url: str
    data_dir: Path
    admin_key_file: Path


def twin_sizes(catalog: Catalog) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The twin's sizes and regions as the catalog has them (each gpu type's size where the catalog offers
    it, at its price)."""
    sizes = [
        {
            "slug": gpu.size_slug,
            "available": True,
            "regions": sorted(r for r, region in catalog.regions.items() if name in region.gpu_types),
            "price_hourly": float(gpu.hourly_usd),
        }
        for name, gpu in catalog.gpu_types.items()
    ]
    regions = [
        {"slug": slug, "name": region.name, "available": True, "features": ["private_networking"]}
        for slug, region in catalog.regions.items()
    ]
    return sizes, regions


def find_llama_server(given: str | None) -> str:
    for candidate in (given, os.environ.get("AGENTCLOUD_LLAMA_SERVER"), shutil.which("llama-server")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    cached = sorted(Path.home().glob(".cache/agentcloud/llama-server-*/bin/llama-server"))
    if cached:
        return str(cached[-1])
    raise InfraError(f"no llama-server found: {LLAMA_SERVER_HINT}")


def preflight() -> None:
    """Everything the twin's droplets need, each missing one named with its fix."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (each droplet is a network namespace with its own firewall): run it with sudo")
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            missing.append(f"`{tool}` (apt-get install {package})")
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        missing.append("`sshd` (apt-get install openssh-server)")
    if missing:
        raise InfraError("agentcloud local up needs " + "; ".join(missing))


@contextmanager
def local_cloud(folder: Path, llama_server: str, catalog: Catalog) -> Iterator[LocalCloud]:
    """The twin with droplet hosts, and the environment that points a gateway's control plane at it (set
    for the duration). Every namespace, link and process is gone afterwards."""
    from agentcloud.components.host_key import generate_host_key
    from agentcloud.tiny_gguf import write_tiny_gguf
    from agentcloud.twin.api import Twin, serve_twin
    from agentcloud.twin.hosts import Hosts

    marker = folder / MARKER
    if folder.exists() and any(folder.iterdir()) and not marker.exists():
        raise InfraError(f"{folder}: not empty and not a local cloud's folder; choose another --dir")
    if folder.exists():  # the last local cloud's: its droplets go with it, even if it was killed
        Hosts.sweep(folder / "droplets")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    folder.chmod(0o700)
    marker.write_text("a local cloud's folder (agentcloud local up): wiped at each start\n")
    private, public = generate_host_key()  # the gateway's SSH key, which the droplets authorize
    ssh_key = folder / "gateway_ssh_key"
    ssh_key.write_text(private)
    ssh_key.chmod(0o600)
    sizes, regions = twin_sizes(catalog)
    token = f"dop_v1_local_{secrets.token_hex(8)}"
    twin = Twin(token=token, sizes=sizes, regions=regions)
    hosts = Hosts(
        folder=folder / "droplets",
        authorized_keys=public + "\n",
        llama_server=llama_server,
        model=str(write_tiny_gguf(folder / "tiny.gguf")),
        prefix=f"acl{os.getpid() % 1000}x",
    )
    hosts.attach(twin)
    saved = dict(os.environ)
    try:
        with serve_twin(twin) as url:
            os.environ.update(
                {
                    "AGENTCLOUD_DATA_DIR": str(folder / "gateway"),
                    "AGENTCLOUD_STACK_OPS": "agentcloud.lifecycle.mocked:from_env",
                    "DIGITALOCEAN_API_ENDPOINT": url,
                    "DIGITALOCEAN_TOKEN": token,
                    "AGENTCLOUD_ENGINE_API_KEY": secrets.token_hex(16),
                    "AGENTCLOUD_SSH_KEY": str(ssh_key),
                }
            )
            yield LocalCloud(url, folder / "gateway", folder / "admin-key")
    finally:
        os.environ.clear()
        os.environ.update(saved)
        hosts.close()


def admin_key(config: Any, catalog: Catalog, key_file: Path) -> str:
    """An org `local` and an admin key of it, written to ``key_file`` (0600) and returned."""
    from agentcloud.store import Store

    store = Store(config.database)
    if not store.org_exists("org_local"):
        store.create_org("local", org_id="org_local")
    plan = "professional" if "professional" in catalog.plans else next(iter(catalog.plans))
    _, token = store.create_key(config.pepper, "org_local", "local-admin", plan, "admin")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return str(token)

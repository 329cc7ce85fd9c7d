"""The gateway's own stack: its config (``agent-cloud:gateway``) and the CPU droplet's cloud-init (pure).

The gateway runs under systemd from a virtualenv; TLS is terminated by a DigitalOcean load balancer with a
managed certificate (docs/gateway.md says why). Secrets (the key pepper, database and Redis URLs, provider API
keys) reach the droplet over SSH into ENV_FILE, never through user-data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from agentcloud import PULUMI_PROJECT
from agentcloud.render import REVIEW_HOST_KEY, HostKey, dump_yaml, environment
from agentcloud.schema import Strict
from agentcloud.spec import Ssh

GATEWAY_KEY = f"{PULUMI_PROJECT}:gateway"
ENV_FILE = "/etc/agentcloud/gateway.env"
DATA_DIR = (
    "/var/lib/agentcloud"  # the service user's state: store, journal, uploads, API stacks, Pulumi's home
)
PULUMI_ROOT = "/opt/pulumi"


def _installed(package: str) -> str:
    from importlib.metadata import version

    return version(package)


DATACENTERS = (
    "nyc1",
    "nyc2",
    "nyc3",
    "ams3",
    "sfo2",
    "sfo3",
    "sgp1",
    "lon1",
    "fra1",
    "tor1",
    "blr1",
    "syd1",
    "atl1",
    "ric1",
)


class SharedStore(Strict):
    """Managed databases for gateway replicas: PostgreSQL (keys, grants, usage) and Valkey (limits)."""

    postgres_size: str = "db-s-1vcpu-1gb"
    redis_size: str = "db-s-1vcpu-1gb"


class GatewaySpec(Strict):
    """The gateway stack's config: size, region, replicas, domain, SSH."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")] = "gateway"
    region: str
    size: str = "s-2vcpu-4gb"
    image: str = "ubuntu-24-04-x64"
    replicas: Annotated[int, Field(ge=1, le=10)] = 1
    domain: str | None = Field(
        default=None, description="serve HTTPS on this name (a domain in DigitalOcean DNS)"
    )
    package: str = Field(default="agentcloud", description="pip requirement that installs this project")
    port: Annotated[int, Field(ge=1024, le=65535)] = 8080
    tag: str = "agentcloud-gateway"
    vpc_uuid: str | None = None
    ssh: Ssh = Ssh()
    shared_store: SharedStore | None = Field(default=None, description="default: on when replicas > 1")
    state_backend: str | None = Field(
        default=None,
        description="where the control plane keeps deployment stacks' state (PULUMI_BACKEND_URL); default: a "
        "directory on the droplet, which only one replica can have: more need a shared one (Spaces: s3://...)",
    )
    pulumi_version: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")] = Field(
        default_factory=lambda: _installed("pulumi"),
        description="the Pulumi CLI installed on the droplets (default: the SDK version planning it)",
    )

    def model_post_init(self, _: Any) -> None:
        if self.region not in DATACENTERS:
            raise ValueError(f"unknown region {self.region!r}; fix: use one of {', '.join(DATACENTERS)}")
        if self.replicas > 1 and (self.state_backend is None or self.state_backend.startswith("file://")):
            raise ValueError(
                f"replicas {self.replicas} would keep {self.replicas} separate stack states on their own "
                "disks; fix: set state_backend to a shared backend, e.g. "
                "s3://BUCKET?endpoint=nyc3.digitaloceanspaces.com (Spaces keys go into the gateway's "
                "secrets file as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
            )

    @property
    def backend_url(self) -> str:
        return self.state_backend or f"file://{DATA_DIR}/pulumi-state"

    @property
    def store(self) -> SharedStore | None:
        if self.shared_store is not None:
            return self.shared_store
        return SharedStore() if self.replicas > 1 else None


@dataclass(frozen=True)
class GatewayView:
    """What the gateway's templates see."""

    name: str
    port: int
    env_file: str
    venv: str
    routes_file: str
    data_dir: str
    backend_url: str = ""
    pulumi_bin: str = f"{PULUMI_ROOT}/bin"


def user_data(spec: GatewaySpec, host_key: HostKey = REVIEW_HOST_KEY) -> str:
    """The gateway droplets' #cloud-config (for review, markers where the host key goes)."""
    view = GatewayView(
        spec.name,
        spec.port,
        ENV_FILE,
        "/opt/agentcloud/venv",
        "/etc/agentcloud/routes.yaml",
        DATA_DIR,
        spec.backend_url,
    )
    env = environment()
    files = {
        "/etc/systemd/system/agentcloud-gateway.service": env.get_template(
            "host/agentcloud-gateway.service.j2"
        ).render(view=view),
        "/etc/systemd/system/agentcloud-gateway.path": env.get_template(
            "host/agentcloud-gateway.path.j2"
        ).render(view=view),
        "/etc/agentcloud/routes.yaml": (
            "# dedicated deployments are registered in the gateway's store\nmodels: []\n"
        ),
    }
    doc: dict[str, Any] = {
        "package_update": True,
        "packages": ["python3-venv", "python3-pip"],
        "users": ["default", {"name": "agentcloud", "system": True, "shell": "/usr/sbin/nologin"}],
        "write_files": [
            {"path": p, "permissions": "0644", "owner": "root:root", "content": c} for p, c in files.items()
        ],
        "runcmd": [
            ["install", "-d", "-m", "0750", "-o", "agentcloud", DATA_DIR],
            ["python3", "-m", "venv", view.venv],
            [f"{view.venv}/bin/pip", "install", "--quiet", spec.package],
            # the control plane's stack operations need the Pulumi CLI: pinned, from Pulumi's installer
            f"curl -fsSL https://get.pulumi.com | sh -s -- --version {spec.pulumi_version} "
            f"--install-root {PULUMI_ROOT} --no-edit-path || exit 1",
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "agentcloud-gateway.path"],
        ],
    }
    doc.update(  # with ssh_keys given, cloud-init generates no other host key
        ssh_deletekeys=True,
        ssh_keys={"ed25519_private": host_key.private_openssh, "ed25519_public": host_key.public_openssh},
    )
    return "#cloud-config\n" + dump_yaml(doc)

"""Gateway settings, from the environment (AGENTCLOUD_*), with defaults that run on one machine."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DeliveryConfig:
    """Where and how an uploaded GGUF is delivered to a deployment's droplets (the control plane does it)."""

    identity_file: str | None = None  # the gateway's SSH key (AGENTCLOUD_SSH_KEY)
    remote_dir: str = "/mnt/agentcloud-models/gguf/byom"  # on the droplet: the model-cache volume
    container_dir: str = "/models/byom"  # the same folder as the engine container sees it
    env_path: str = "/etc/agentcloud/byom.env"
    restart_command: str = "systemctl restart agentcloud-engine"
    health_timeout_s: float = 900.0


def _data_dir() -> Path:
    return Path(os.environ.get("AGENTCLOUD_DATA_DIR", Path.home() / ".local" / "share" / "agentcloud"))


@dataclass(frozen=True)
class GatewayConfig:
    """Settings of both planes, from AGENTCLOUD_* variables (`from_env`) with defaults for one machine."""

    database: str = field(default_factory=lambda: str(_data_dir() / "gateway.sqlite3"))
    redis_url: str | None = None
    pepper: bytes = b""
    catalog: str | None = None
    routes_file: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_upload_bytes: int = 25 * 1024 * 1024
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 120.0
    idle_timeout_s: float = 30.0
    key_cache_ttl_s: float = 30.0
    key_cache_size: int = 10_000
    usage_flush_s: float = 1.0
    # the usage journal (see journal.py): local to this host, tagged with the store it belongs to
    journal_dir: str = field(default_factory=lambda: str(_data_dir() / "usage-journal"))
    samples_max: int = 100_000  # deployment samples, and usage rollups of a segment, held in memory
    default_max_tokens: int = 512
    metrics_token: str | None = None
    anthropic_version: str = "2023-06-01"
    # bring your own model
    upload_dir: str = field(default_factory=lambda: str(_data_dir() / "models"))
    max_model_bytes: int = 200 * 1024**3
    ssh_key: str | None = None  # the gateway's SSH private key for model delivery and engine secrets
    # What the control plane writes to every droplet after each up (control/secrets_push.py); never logged
    engine_api_key: str | None = field(default=None, repr=False)
    hf_token: str | None = field(default=None, repr=False)
    engine_env_path: str = "/etc/agentcloud/engine.env"
    secrets_retry_s: float = 120.0  # how long a droplet that cannot be reached yet is retried
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    # webhooks: http and loopback targets only for local development and tests
    webhooks_allow_http: bool = False
    webhooks_allow_loopback: bool = False
    webhook_backoff_s: float = 5.0
    webhook_tick_s: float = 1.0
    autoscale_interval_s: float = 30.0
    wake_hold_s: float = (
        30.0  # how long a request to a deployment at zero is held while it wakes (header bounded)
    )
    wake_hold_max_s: float = 600.0
    wake_poll_s: float = 0.25  # how often the control plane looks for wake requests
    sync_interval_s: float = 1.0  # how often a data plane polls the store for route and key changes
    probe_interval_s: float = 2.0  # how often a data plane asks each replica for /health and its queue
    # prefix_aware: a key leaves home past this multiple of its share of load, and waits at most this long
    # for its turn at home (0: never hold)
    routing_load_factor: float = 2.0
    routing_hold_s: float = 0.5
    # connection bounds of the server (see server.py): slow or oversized clients are refused early
    header_timeout_s: float = 10.0
    body_idle_s: float = 30.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 4096
    stack_ops: str | None = None  # module:factory of the control plane's stack operations (default: Pulumi)
    # The Pulumi workspace of the stacks the API creates (their stack files; never the repository's stacks/)
    stacks_dir: str = field(default_factory=lambda: str(_data_dir() / "api-stacks"))

    @staticmethod
    def from_env(**overrides: object) -> GatewayConfig:
        env = os.environ
        values: dict[str, object] = {}
        for name, kind in (
            ("database", str),
            ("redis_url", str),
            ("catalog", str),
            ("routes_file", str),
            ("metrics_token", str),
            ("upload_dir", str),
            ("journal_dir", str),
            ("max_model_bytes", int),
            ("ssh_key", str),
            ("engine_api_key", str),
            ("hf_token", str),
            ("engine_env_path", str),
            ("secrets_retry_s", float),
            ("max_body_bytes", int),
            ("max_upload_bytes", int),
            ("connect_timeout_s", float),
            ("first_byte_timeout_s", float),
            ("idle_timeout_s", float),
            ("key_cache_ttl_s", float),
            ("default_max_tokens", int),
            ("stack_ops", str),
            ("autoscale_interval_s", float),
            ("stacks_dir", str),
            ("routing_load_factor", float),
            ("routing_hold_s", float),
            ("header_timeout_s", float),
            ("body_idle_s", float),
            ("max_header_bytes", int),
            ("max_connections", int),
        ):
            raw = env.get(f"AGENTCLOUD_{name.upper()}")
            if raw:
                values[name] = kind(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        database = str(values.get("database", GatewayConfig().database))
        if "journal_dir" not in values and database != ":memory:" and "://" not in database:
            values["journal_dir"] = str(Path(database).parent / "usage-journal")  # next to the SQLite file
        if "pepper" not in values:
            values["pepper"] = load_pepper(database)
        if "metrics_token" not in values:  # /metrics is never anonymous
            values["metrics_token"] = metrics_token(values["pepper"])  # type: ignore[arg-type]
        return GatewayConfig(**values)  # type: ignore[arg-type]


def load_pepper(database: str) -> bytes:
    """The key-hashing pepper: AGENTCLOUD_KEY_PEPPER (production: a secret shared by every replica), else a
    random one kept next to a local SQLite database (mode 0600) so a single machine needs no setup."""
    value = os.environ.get("AGENTCLOUD_KEY_PEPPER")
    if value:
        return value.encode()
    if database.startswith(("postgres://", "postgresql://")):
        raise SystemExit("AGENTCLOUD_KEY_PEPPER must be set when the gateway shares a PostgreSQL database")
    path = Path(database + ".pepper") if database != ":memory:" else None
    if path is None:
        return secrets.token_bytes(32)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def metrics_token(pepper: bytes) -> str:
    """The default bearer token of /metrics (AGENTCLOUD_METRICS_TOKEN overrides it): derived from the key
    pepper, so every replica that shares the pepper shares it and nothing else needs distributing. Print it
    with `agentcloud gateway metrics-token` for Prometheus' `authorization` setting."""
    return hmac.new(pepper, b"agentcloud /metrics", hashlib.sha256).hexdigest()[:40]

"""Ship an uploaded GGUF to a deployment's droplets over SFTP (host key pinned), verify it there by sha256,
write llama-server's settings and restart the engine. Blocking (paramiko): the gateway runs it in a thread."""

from __future__ import annotations

import io
import shlex

from agentcloud.gateway.config import DeliveryConfig
from agentcloud.gateway.routing import SshHost
from agentcloud.remote import RemoteError, Target, connect, env_file, put, run


def deliver(
    host: SshHost, local_path: str, file_name: str, settings: dict[str, str], config: DeliveryConfig
) -> str:
    """Returns the sha256 the droplet computed for the file it now holds."""
    client = connect(
        Target(host.host, host.host_public_key, host.port, host.username), key_filename=config.identity_file
    )
    try:
        run(client, f"mkdir -p -- {shlex.quote(config.remote_dir)}")
        with open(local_path, "rb") as f:
            digest = put(client, f, f"{config.remote_dir}/{file_name}", mode=0o644)
        put(client, io.BytesIO(env_file(settings)), config.env_path, mode=0o600)
        run(client, config.restart_command, timeout_s=120)
        return digest
    finally:
        client.close()


__all__ = ["DeliveryConfig", "RemoteError", "deliver"]

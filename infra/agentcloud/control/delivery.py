"""Ship an uploaded GGUF to a deployment's droplets over SFTP (host key pinned), verify it there by sha256,
write llama-server's settings and restart the engine. Blocking (paramiko): the gateway runs it in a thread."""

from __future__ import annotations

import io
import shlex

from agentcloud.gateway.config import DeliveryConfig
from agentcloud.gateway.routing import SshHost
from agentcloud.remote import RemoteError, Target, connect, env_file, put, run


def deliver(
    host: SshHost,
    local_path: str,
    file_name: str,
    settings: dict[str, str],
    config: DeliveryConfig,
    expected_sha256: str | None = None,
) -> str:
    """Returns the sha256 the droplet computed for the file it now holds. With ``expected_sha256``, a file
    the droplet already holds with that sum (its model-cache volume outlives droplets: a replacement, a wake)
    is not sent again; its settings are written and the engine restarted all the same."""
    client = connect(
        Target(host.host, host.host_public_key, host.port, host.username), key_filename=config.identity_file
    )
    remote = f"{config.remote_dir}/{file_name}"
    marker = shlex.quote(f"{remote}.sha256")  # written after a verified transfer
    try:
        run(client, f"mkdir -p -- {shlex.quote(config.remote_dir)}")
        held = run(client, f"test -f {shlex.quote(remote)} && cat -- {marker} || true").strip()
        if expected_sha256 is not None and held == expected_sha256:
            digest = held
        else:
            with open(local_path, "rb") as f:
                digest = put(client, f, remote, mode=0o644)
            run(client, f"echo {digest} > {marker}")
        put(client, io.BytesIO(env_file(settings)), config.env_path, mode=0o600)
        run(client, config.restart_command, timeout_s=120)
        return digest
    finally:
        client.close()


__all__ = ["DeliveryConfig", "RemoteError", "deliver"]

"""SSH/SFTP to deployment droplets with the host key pinned (paramiko).

Every connection trusts exactly the host key the stack generated and injected through cloud-init; an unknown
or different key is refused (RejectPolicy), never added. Files are written to a temporary name, checked by
sha256 on the remote side, then renamed into place, so a half-written file never becomes visible.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets as pysecrets
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from agentcloud.errors import InfraError

CHUNK_BYTES = 1024 * 1024
ENV_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class RemoteError(InfraError):
    """An SSH connection, transfer or remote check failed."""


@dataclass(frozen=True)
class Target:
    """A droplet to reach over SSH, with its host key pinned."""

    host: str
    host_public_key: str  # "ssh-ed25519 AAAA..." as the stack exports it
    port: int = 22
    username: str = "root"


def _pinned_key(target: Target) -> tuple[str, Any]:
    import paramiko

    parts = target.host_public_key.split()
    if len(parts) < 2:
        raise RemoteError(f"host key for {target.host} is not an OpenSSH public key line")
    try:
        key = paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
    except Exception as exc:  # paramiko raises several types for malformed keys
        raise RemoteError(f"host key for {target.host} cannot be read: {exc}") from None
    return parts[0], key


def connect(target: Target, key_filename: str | None = None, timeout_s: float = 15.0) -> Any:
    """An SSHClient that accepts only the pinned host key."""
    import paramiko

    key_type, key = _pinned_key(target)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
    client.get_host_keys().add(name, key_type, key)
    try:
        client.connect(
            target.host,
            port=target.port,
            username=target.username,
            key_filename=key_filename,
            allow_agent=key_filename is None,
            look_for_keys=key_filename is None,
            timeout=timeout_s,
            banner_timeout=timeout_s,
            auth_timeout=timeout_s,
        )
    except paramiko.BadHostKeyException:
        client.close()
        raise RemoteError(
            f"{target.host}:{target.port} presented a host key that is not the one pinned for it; refusing "
            "(the droplet was replaced outside Pulumi, or someone is in the middle)"
        ) from None
    except paramiko.SSHException as exc:
        client.close()
        raise RemoteError(f"SSH to {target.host}:{target.port} failed: {exc}") from None
    except OSError as exc:
        client.close()
        raise RemoteError(f"cannot reach {target.host}:{target.port}: {exc.strerror or exc}") from None
    return client


def run(client: Any, command: str, timeout_s: float = 60.0) -> str:
    _, stdout, stderr = client.exec_command(command, timeout=timeout_s)
    out = stdout.read().decode()
    if stdout.channel.recv_exit_status() != 0:
        raise RemoteError(
            f"remote command failed: {command.split()[0]}: {stderr.read().decode().strip()[:200]}"
        )
    return str(out)


def put(client: Any, source: IO[bytes], remote_path: str, mode: int = 0o600) -> str:
    """Stream ``source`` to ``remote_path`` atomically; returns the sha256 verified on the remote side."""
    digest = hashlib.sha256()
    temp = f"{remote_path}.partial-{pysecrets.token_hex(6)}"
    # created empty with its final mode by the remote shell (umask 077: never wider than 0600, not even for
    # an instant), then chmod-ed to ``mode`` and filled over SFTP
    run(client, f"umask 077 && : > {shlex.quote(temp)} && chmod {mode:o} -- {shlex.quote(temp)}")
    sftp = client.open_sftp()
    try:
        with sftp.open(temp, "r+") as remote:
            remote.set_pipelined(True)
            while chunk := source.read(CHUNK_BYTES):
                digest.update(chunk)
                remote.write(chunk)
        expected = digest.hexdigest()
        remote_sum = run(client, f"sha256sum -- {shlex.quote(temp)}").split()[0]
        if remote_sum != expected:
            raise RemoteError(
                f"sha256 mismatch after upload to {remote_path}: sent {expected}, found {remote_sum}"
            )
        sftp.posix_rename(temp, remote_path)
        return expected
    except BaseException:
        with contextlib.suppress(OSError):
            sftp.remove(temp)
        raise
    finally:
        sftp.close()


def env_file(values: Mapping[str, str]) -> bytes:
    """A systemd/docker env file; refuses names or values that would break out of their line."""
    lines = []
    for name, value in values.items():
        if not name or set(name) - ENV_NAME_CHARS:
            raise RemoteError(f"invalid environment variable name: {name!r}")
        if any(c in value for c in "\r\n\0"):
            raise RemoteError(f"the value of {name} contains a line break; refusing to write it")
        lines.append(f"{name}={value}")
    return ("\n".join(lines) + "\n").encode()


def push_env(
    targets: Iterable[Target], values: Mapping[str, str], remote_path: str, key_filename: str | None = None
) -> list[str]:
    """Write the engine's secrets file on every droplet; returns the hosts done."""
    import io

    data = env_file(values)
    done = []
    for target in targets:
        client = connect(target, key_filename=key_filename)
        try:
            put(client, io.BytesIO(data), remote_path, mode=0o600)
        finally:
            client.close()
        done.append(target.host)
    return done

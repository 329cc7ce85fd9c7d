"""A real OpenSSH server on 127.0.0.1 for tests: generated host key, one authorized client key."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentcloud.components.host_key import generate_host_key

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


@dataclass(frozen=True)
class SshServer:
    port: int
    host_public_key: str
    client_key: str
    username: str
    root: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{_name(proc)} exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{_name(proc)} did not start listening on {port}")


def _name(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args
    return str(args[0]) if isinstance(args, list | tuple) else str(args)


@contextmanager
def ssh_server(root: Path) -> Iterator[SshServer]:
    if SSHD is None:
        pytest.skip("OpenSSH server not installed (scripts/setup.sh installs openssh-server)")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    host_private, host_public = generate_host_key()
    client_private, client_public = generate_host_key()
    (root / "host_key").write_text(host_private)
    (root / "client_key").write_text(client_private)
    (root / "authorized_keys").write_text(client_public + "\n")
    for name in ("host_key", "client_key", "authorized_keys"):
        os.chmod(root / name, 0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
        "LogLevel ERROR\n"
    )
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        yield SshServer(port, host_public, str(root / "client_key"), getpass.getuser(), root)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()

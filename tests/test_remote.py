"""SSH/SFTP delivery against a real OpenSSH server on 127.0.0.1 with a pinned host key."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcloud.components.host_key import generate_host_key
from agentcloud.remote import RemoteError, Target, connect, env_file, push_env, put
from tests.sshd import SshServer, ssh_server


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    with ssh_server(tmp_path / "sshd") as server:
        yield server


def _target(s: SshServer, host_key: str | None = None) -> Target:
    return Target(
        host="127.0.0.1", port=s.port, username=s.username, host_public_key=host_key or s.host_public_key
    )


def test_transfer_is_verified_and_atomic(sshd: SshServer, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    dest = tmp_path / "model.bin"
    client = connect(_target(sshd), key_filename=sshd.client_key)
    try:
        digest = put(client, io.BytesIO(data), str(dest), mode=0o640)
    finally:
        client.close()
    assert digest == hashlib.sha256(data).hexdigest()
    assert dest.read_bytes() == data
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_wrong_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    _, other_public = generate_host_key()
    with pytest.raises(RemoteError, match="not the one pinned"):
        connect(_target(sshd, other_public), key_filename=sshd.client_key)


def test_unknown_client_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    stranger, _ = generate_host_key()
    (tmp_path / "stranger").write_text(stranger)
    os.chmod(tmp_path / "stranger", 0o600)
    with pytest.raises(RemoteError, match=r"SSH to 127\.0\.0\.1"):
        connect(_target(sshd), key_filename=str(tmp_path / "stranger"))


def test_failed_upload_leaves_nothing(sshd: SshServer, tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        calls = 0

        def read(self, n: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("source vanished")
            return b"x" * 1024

    client = connect(_target(sshd), key_filename=sshd.client_key)
    try:
        with pytest.raises(OSError, match="source vanished"):
            put(client, Broken(), str(tmp_path / "half.bin"))  # type: ignore[arg-type]
    finally:
        client.close()
    assert list(tmp_path.glob("half.bin*")) == []


def test_push_env_writes_secrets_0600(sshd: SshServer, tmp_path: Path) -> None:
    dest = tmp_path / "engine.env"
    done = push_env(
        [_target(sshd)], {"HF_TOKEN": "hf_abc", "VLLM_API_KEY": "k-1"}, str(dest), sshd.client_key
    )
    assert done == ["127.0.0.1"]
    assert dest.read_text() == "HF_TOKEN=hf_abc\nVLLM_API_KEY=k-1\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_env_file_refuses_injection() -> None:
    with pytest.raises(RemoteError, match="line break"):
        env_file({"HF_TOKEN": "x\nLD_PRELOAD=/tmp/evil.so"})
    with pytest.raises(RemoteError, match="invalid environment variable name"):
        env_file({"BAD NAME": "x"})


def test_unreachable_host() -> None:
    _, public = generate_host_key()
    with pytest.raises(RemoteError, match="cannot reach"):
        connect(Target(host="127.0.0.1", port=9, host_public_key=public), timeout_s=2)


def test_cli_secrets_push(sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentcloud.cli import main

    dest = tmp_path / "engine.env"
    monkeypatch.setenv("AGENTCLOUD_ENGINE_API_KEY", "engine-key-1")
    monkeypatch.setenv("AGENTCLOUD_HF_TOKEN", "hf_token_1")
    code = main(
        [
            "secrets",
            "push",
            "gguf-8b",
            "--host",
            "127.0.0.1",
            "--host-key",
            sshd.host_public_key,
            "--port",
            str(sshd.port),
            "--user",
            sshd.username,
            "--identity",
            sshd.client_key,
            "--remote-path",
            str(dest),
        ]
    )
    assert code == 0
    assert dest.read_text() == "LLAMA_API_KEY=engine-key-1\nHF_TOKEN=hf_token_1\n"


def test_cli_secrets_push_without_pulumi_or_hosts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from agentcloud.cli import main

    if shutil.which("pulumi"):
        pytest.skip("the pulumi CLI is installed here; this checks the message shown without it")
    assert main(["secrets", "push", "gguf-8b"]) == 2
    assert "pulumi CLI is not on PATH" in capsys.readouterr().err


def test_a_secrets_file_is_never_wider_than_0600(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary file is 0600 from the moment it exists (it was created 0644 by SFTP, then chmod-ed)."""
    import paramiko

    seen: list[int] = []
    opened = paramiko.SFTPClient.open

    def watching(self: paramiko.SFTPClient, filename: str, *args: object, **kwargs: object) -> object:
        handle = opened(self, filename, *args, **kwargs)  # type: ignore[arg-type]
        seen.append(stat.S_IMODE(os.stat(filename).st_mode))  # the sshd is local: its files are ours to see
        return handle

    monkeypatch.setattr(paramiko.SFTPClient, "open", watching)
    push_env([_target(sshd)], {"HF_TOKEN": "hf_abc"}, str(tmp_path / "engine.env"), sshd.client_key)
    assert seen and all(mode & 0o077 == 0 for mode in seen), [oct(m) for m in seen]

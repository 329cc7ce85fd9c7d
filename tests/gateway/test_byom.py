"""Bring your own model, with real components: uploads through the gateway, validation, SFTP delivery to a
real OpenSSH server (host key pinned), a real llama.cpp restarted on the delivered GGUF, and `byom:<name>`
answered through the gateway with the openai SDK. Hostile uploads are refused with their reason and leave
nothing behind."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import requests

from agentcloud.catalog import ApiFormat, Catalog
from agentcloud.components.host_key import generate_host_key
from agentcloud.gateway.config import DeliveryConfig
from agentcloud.gateway.routing import Deployment, RouteTable, SshHost
from agentcloud.store import Store
from agentcloud.tiny_gguf import write_tiny_gguf
from agentcloud.upstream.target import Target
from tests.gateway.conftest import assert_counters_released
from tests.gateway.harness import Keys, Running, make_gateway, running
from tests.gateway.test_llamacpp import ENGINE_KEY, LLAMA_SERVER
from tests.sshd import SshServer, free_port, ssh_server

API = "/api/v1/public"
RESTART = """#!/bin/sh
# Stands in for `systemctl restart agentcloud-engine` on a droplet: llama-server on the delivered model.
cd {dir}
if [ -f llama.pid ]; then kill "$(cat llama.pid)" 2>/dev/null || true; sleep 0.3; fi
set -a; . {env}; set +a
nohup {server} --host 127.0.0.1 --port {port} --api-key {key} -t 1 > llama.log 2>&1 < /dev/null &
echo $! > llama.pid
"""


@dataclass
class Byom:
    gw: Running
    keys: Keys
    sshd: SshServer
    remote: Path
    uploads: Path
    gguf: bytes


def _deployment(engine_port: int, host_key: str, sshd: SshServer) -> Deployment:
    target = Target(
        "dep_byom#0",
        f"http://127.0.0.1:{engine_port}/v1",
        ApiFormat.OPENAI,
        "byom:none",
        ENGINE_KEY,
        deployment_id="dep_byom",
    )
    host = SshHost("127.0.0.1", host_key, sshd.port, sshd.username)
    return Deployment(
        "dep_byom", "org_a", "byom", "byom:none", (target,), gpu_type="l40s", preset="balanced", hosts=(host,)
    )


@pytest.fixture
def byom(tmp_path: Path, catalog: Catalog, store: Store, keys: Keys) -> Iterator[Byom]:
    if not LLAMA_SERVER.exists():
        pytest.skip(f"llama-server not built at {LLAMA_SERVER}: run scripts/build-llama-server.sh")
    with ssh_server(tmp_path / "sshd") as sshd:
        remote = tmp_path / "droplet"
        remote.mkdir()
        port = free_port()
        (remote / "restart.sh").write_text(
            RESTART.format(
                dir=remote, env=remote / "byom.env", server=LLAMA_SERVER, port=port, key=ENGINE_KEY
            )
        )
        routes = RouteTable()
        routes.add_deployment(_deployment(port, sshd.host_public_key, sshd))
        delivery = DeliveryConfig(
            identity_file=sshd.client_key,
            remote_dir=str(remote / "models"),
            container_dir=str(remote / "models"),
            env_path=str(remote / "byom.env"),
            restart_command=f"sh {remote / 'restart.sh'}",
            health_timeout_s=60,
        )
        gateway = make_gateway(
            catalog, store, routes, tmp_path, delivery=delivery, max_model_bytes=4 * 1024 * 1024
        )
        gguf = write_tiny_gguf(tmp_path / "finetune.gguf").read_bytes()
        try:
            with running(gateway) as r:
                yield Byom(r, keys, sshd, remote, tmp_path / "uploads", gguf)
            assert_counters_released(r)
        finally:
            pid = remote / "llama.pid"
            if pid.exists():
                import os
                import signal

                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid.read_text()), signal.SIGTERM)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _upload(
    b: Byom, data: bytes, name: str = "my-model-v1", dep: str = "dep_byom", key: str | None = None
) -> requests.Response:
    return requests.post(
        f"{b.gw.url}{API}/models/upload",
        headers=_auth(key or b.keys.admin),
        timeout=30,
        files={"file": ("finetune.gguf", io.BytesIO(data), "application/octet-stream")},
        data={"name": name, "deployment_id": dep},
    )


def _wait(b: Byom, upload_id: str, timeout_s: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = requests.get(
            f"{b.gw.url}{API}/models/uploads/{upload_id}", headers=_auth(b.keys.admin), timeout=10
        ).json()
        if status["status"] in ("ready", "failed") or time.monotonic() > deadline:
            return dict(status)
        time.sleep(0.2)


def _nothing_left(b: Byom) -> None:
    assert (b.uploads / ".incoming").is_dir(), "the gateway writes uploads under the test's folder"
    leftovers = [p.name for p in b.uploads.rglob("*") if p.is_file()]
    assert leftovers == [], f"refused uploads left files behind: {leftovers}"


def test_upload_deliver_and_chat(byom: Byom) -> None:
    resp = _upload(byom, byom.gguf)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] == "uploading" and body["model"] == "byom:my-model-v1"
    assert body["sha256"] == hashlib.sha256(byom.gguf).hexdigest()
    assert body["gguf"]["architecture"] == "llama" and body["gguf"]["quantization"] == "F16"
    status = _wait(byom, str(body["id"]))
    assert status["status"] == "ready", status
    delivered = byom.remote / "models" / "my-model-v1.gguf"
    assert hashlib.sha256(delivered.read_bytes()).hexdigest() == body["sha256"]
    assert "LLAMA_ARG_MODEL=" + str(delivered) in (byom.remote / "byom.env").read_text()
    client = byom.gw.openai(byom.keys.admin, timeout=60)
    answer = client.chat.completions.create(
        model="byom:my-model-v1", messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0
    )
    assert answer.usage is not None
    assert isinstance(answer.choices[0].message.content, str) and answer.usage.completion_tokens == 4
    # the caller's key is checked against the deployment's grants
    with pytest.raises(openai.PermissionDeniedError):
        byom.gw.openai(byom.keys.scoped_other).chat.completions.create(
            model="byom:my-model-v1", messages=[{"role": "user", "content": "x"}], max_tokens=2
        )
    with pytest.raises(openai.NotFoundError):
        byom.gw.openai(byom.keys.other_org).chat.completions.create(
            model="byom:my-model-v1", messages=[{"role": "user", "content": "x"}], max_tokens=2
        )
    assert _upload(byom, byom.gguf).status_code == 409, "names are unique within an org"


def test_resumable_upload(byom: Byom) -> None:
    url = f"{byom.gw.url}{API}/models/uploads"
    sha = hashlib.sha256(byom.gguf).hexdigest()
    created = requests.post(
        url,
        headers=_auth(byom.keys.admin),
        timeout=10,
        json={"name": "resumed", "deployment_id": "dep_byom", "size": len(byom.gguf), "sha256": sha},
    )
    assert created.status_code == 201 and created.json()["status"] == "pending_upload"
    target = f"{byom.gw.url}{created.json()['upload_url']}"

    def patch(offset: int, chunk: bytes) -> requests.Response:
        return requests.patch(
            target,
            data=chunk,
            timeout=30,
            headers={
                **_auth(byom.keys.admin),
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            },
        )

    third = len(byom.gguf) // 3
    first = patch(0, byom.gguf[:third])
    assert first.status_code == 204 and first.headers["Upload-Offset"] == str(third)
    wrong = patch(0, byom.gguf[:10])
    assert wrong.status_code == 409 and wrong.headers["Upload-Offset"] == str(third)
    head = requests.head(target, headers=_auth(byom.keys.admin), timeout=10)
    assert head.headers["Upload-Offset"] == str(third)
    assert requests.get(target, headers=_auth(byom.keys.admin)).json()["status"] == "uploading"
    assert patch(third, byom.gguf[third : 2 * third]).status_code == 204
    done = patch(2 * third, byom.gguf[2 * third :])
    assert done.status_code == 202 and done.json()["sha256"] == sha
    assert _wait(byom, created.json()["id"])["status"] == "ready"
    assert requests.get(target, headers=_auth(byom.keys.other_org)).status_code == 404


def _s(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


def _hostile(kind: str, gguf: bytes) -> bytes:
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
    return {
        "wrong magic": b"\x7fELF" + gguf[4:],
        "truncated header": gguf[:200],
        "truncated data": gguf[: len(gguf) - 1000],
        "absurd counts": b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 1 << 40) + b"\0" * 64,
        "absurd string length": header + struct.pack("<Q", 1 << 60) + b"\0" * 64,
        "absurd array": header + _s("general.architecture") + struct.pack("<IIQ", 9, 8, 1 << 40) + b"\0" * 64,
    }[kind]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("wrong magic", "not a GGUF file"),
        ("truncated header", "truncated"),
        ("truncated data", "truncated"),
        ("absurd counts", "tensor count"),
        ("absurd string length", "exceeds the limit"),
        ("absurd array", "array of"),
    ],
)
def test_hostile_files_refused(byom: Byom, kind: str, reason: str) -> None:
    resp = _upload(byom, _hostile(kind, byom.gguf), name=f"h-{kind.replace(' ', '-')}")
    assert resp.status_code == 422 and reason in resp.json()["error"]["message"], resp.text
    assert resp.json()["error"]["code"] == "invalid_gguf"
    _nothing_left(byom)


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b", "..", "UPPER", "x" * 80, "", "name\x00.gguf"])
def test_path_like_names_refused(byom: Byom, name: str) -> None:
    resp = _upload(byom, byom.gguf, name=name)
    assert resp.status_code == 400 and "name" in resp.json()["error"]["message"], resp.text
    _nothing_left(byom)
    assert not (byom.remote / "etc").exists()


def test_oversize_upload_refused(byom: Byom) -> None:
    big = byom.gguf + b"\0" * (5 * 1024 * 1024)  # over the 4 MiB cap of this gateway
    resp = _upload(byom, big, name="too-big")
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "upload_too_large"
    _nothing_left(byom)


def test_wrong_deployment_or_permission(byom: Byom) -> None:
    assert _upload(byom, byom.gguf, dep="dep_nope").status_code == 404
    assert _upload(byom, byom.gguf, key=byom.keys.standard).status_code == 403  # not an admin of the org
    _nothing_left(byom)


def test_wrong_host_key_fails_delivery(byom: Byom) -> None:
    _, other = generate_host_key()
    dep = byom.gw.gateway.routes.deployments["dep_byom"]
    hosts = (SshHost(dep.hosts[0].host, other, dep.hosts[0].port, dep.hosts[0].username),)
    byom.gw.gateway.routes.add_deployment(dataclasses.replace(dep, hosts=hosts))
    resp = _upload(byom, byom.gguf, name="pinned")
    assert resp.status_code == 202
    status = _wait(byom, resp.json()["id"])
    assert status["status"] == "failed" and "not the one pinned" in str(status["reason"])
    assert not (byom.remote / "models" / "pinned.gguf").exists()


def test_cli_upload_with_progress_and_resume(
    byom: Byom, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agentcloud deployments upload`: chunks with progress, then delivery followed to `ready`; an
    interrupted upload resumes from the offset the gateway confirms."""
    from agentcloud.cli import main

    model = tmp_path / "finetune.gguf"
    model.write_bytes(byom.gguf)
    base = ["deployments", "--url", byom.gw.url, "--key", byom.keys.admin, "upload", "dep_byom", str(model)]
    assert main([*base, "--name", "from-cli", "--chunk-mb", "0.02"]) == 0
    out, err = capsys.readouterr()
    assert "ready" in out and "served as byom:from-cli" in out, out
    assert err.count("sending finetune.gguf:") >= 3 and "(100%" in err, err  # a line per tenth, not a tty
    # interrupted after a third: the CLI resumes where the gateway says it stopped
    created = requests.post(
        f"{byom.gw.url}{API}/models/uploads",
        headers=_auth(byom.keys.admin),
        timeout=10,
        json={"name": "resumed-cli", "deployment_id": "dep_byom", "size": len(byom.gguf)},
    ).json()
    third = len(byom.gguf) // 3
    requests.patch(
        f"{byom.gw.url}{created['upload_url']}",
        data=byom.gguf[:third],
        timeout=30,
        headers={
            **_auth(byom.keys.admin),
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    ).raise_for_status()
    assert main([*base, "--name", "resumed-cli", "--resume", created["id"]]) == 0
    out = capsys.readouterr().out
    assert f"resuming {created['id']} at {third:,}" in out and "served as byom:resumed-cli" in out, out
    # a file that is not there: one line, nothing sent
    assert main([*base[:-1], str(tmp_path / "missing.gguf"), "--name", "x"]) == 2
    assert "no such file" in capsys.readouterr().err

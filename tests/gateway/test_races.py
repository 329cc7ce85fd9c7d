"""Requests that race on one object get clear answers (issue 10): concurrent settings edits of a deployment,
DELETE at any state, DELETE of an upload while bytes arrive; abandoned uploads expire; a crafted GGUF header
is checked in a child process bounded in time and memory."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agentcloud.catalog import Catalog
from agentcloud.control.uploads import OFFSET_CT
from agentcloud.gguf import GGUFError, read_gguf_bounded
from agentcloud.tiny_gguf import write_tiny_gguf
from tests.gateway.harness import API, World, world_of


@pytest.fixture
def world(catalog: Catalog, tmp_path: Path) -> Iterator[World]:
    with world_of(catalog, tmp_path) as w:
        yield w


def test_concurrent_sla_edits_all_land_whole(world: World) -> None:
    results: list[int] = []

    def patch(i: int) -> None:
        resp = world.admin("PATCH", f"{API}/deployments/{world.dep_m}/sla", json={"ttft_target_ms": 1000 + i})
        results.append(resp.status_code)

    threads = [threading.Thread(target=patch, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert results == [200] * 8
    stacks = world.r.gateway.control.deployments.stacks_dir
    files = sorted(p.name for p in stacks.iterdir())
    assert not [f for f in files if f.endswith(".tmp")], files
    stack = next(p for p in stacks.iterdir() if p.name.startswith("Pulumi.api."))
    sla = yaml.safe_load(stack.read_text())["config"]["agent-cloud:deployment"]["sla"]
    shown = world.admin("GET", f"{API}/deployments/{world.dep_m}").json()["sla"]
    assert sla == shown and 1000 <= sla["ttft_target_ms"] < 1008, (sla, shown)


def test_delete_is_idempotent(world: World) -> None:
    for _ in range(3):  # active, then inactive twice: each DELETE destroys what is left
        resp = world.admin("DELETE", f"{API}/deployments/{world.dep_m}")
        assert resp.status_code == 202, resp.text
        world.settled()
        assert world.admin("GET", f"{API}/deployments/{world.dep_m}").json()["status"] == "inactive"


def test_delete_of_an_upload_while_its_bytes_arrive_is_409(world: World) -> None:
    upload_id = world.upload()
    host, port = world.r.url.removeprefix("http://").split(":")
    # a PATCH that sends its headers and half its body, then waits
    sock = socket.create_connection((host, int(port)))
    try:
        head = (
            f"PATCH {API}/models/uploads/{upload_id} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {world.keys.admin}\r\nContent-Type: {OFFSET_CT}\r\n"
            f"Upload-Offset: 0\r\nContent-Length: 32\r\n\r\n"
        )
        sock.sendall(head.encode() + b"\0" * 16)
        uploads = world.r.gateway.control.uploads
        deadline = time.monotonic() + 5
        while upload_id not in uploads.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = world.admin("DELETE", f"{API}/models/uploads/{upload_id}")
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "upload_busy", busy.text
        sock.sendall(b"\0" * 16)
        assert b"204" in sock.recv(4096).split(b"\r\n")[0]
    finally:
        sock.close()
    assert world.admin("DELETE", f"{API}/models/uploads/{upload_id}").status_code == 200


def test_abandoned_upload_parts_expire(world: World) -> None:
    upload_id = world.upload()
    uploads = world.r.gateway.control.uploads
    part = uploads.incoming / f"{upload_id}.part"
    assert part.exists()
    assert world.r.run(uploads.expire_parts()) == [], "a fresh part stays"
    old = time.time() - uploads.part_ttl_s - 60
    os.utime(part, (old, old))
    assert world.r.run(uploads.expire_parts()) == [upload_id]
    assert not part.exists()
    status = world.admin("GET", f"{API}/models/uploads/{upload_id}").json()
    assert status["status"] == "failed" and "expired" in status["reason"]


def _array_bomb(path: Path, arrays: int) -> None:
    """A GGUF header whose one metadata value is an array of ``arrays`` empty arrays."""
    key = b"bomb"
    with path.open("wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, 1))
        f.write(struct.pack("<Q", len(key)) + key + struct.pack("<I", 9))  # an array
        f.write(struct.pack("<IQ", 9, arrays))  # of arrays
        f.write(struct.pack("<IQ", 0, 0) * arrays)  # each empty


def test_a_crafted_header_is_bounded_in_time(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.gguf"
    _array_bomb(bomb, 1 << 20)
    started = time.monotonic()
    with pytest.raises(GGUFError, match=r"took more than 0\.5 s"):
        read_gguf_bounded(str(bomb), timeout_s=0.5)
    assert time.monotonic() - started < 5
    good = tmp_path / "tiny.gguf"
    write_tiny_gguf(good)
    info = read_gguf_bounded(str(good))
    assert info.architecture == "llama" and info.tensor_count > 0


def test_a_checker_out_of_memory_is_a_refusal(tmp_path: Path) -> None:
    """The reader keeps nothing of long arrays, so the memory bound is a backstop: a child that hits it is
    reported as a refusal of the file, never as a crash of the gateway."""
    bomb = tmp_path / "bomb.gguf"
    _array_bomb(bomb, 1000)
    with pytest.raises(GGUFError, match=r"needs more than 8 MiB|could not be read"):
        read_gguf_bounded(str(bomb), memory_bytes=8 << 20)  # too little for Python itself to start

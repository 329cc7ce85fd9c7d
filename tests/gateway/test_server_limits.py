"""The server refuses slow and oversized clients before they reach the application (issue 10): slowloris
headers (408), huge headers (431), a body that stops (408), and more connections than allowed (503); normal
requests are served throughout."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from agentcloud.catalog import Catalog
from agentcloud.store import Store
from tests.gateway.fake_upstream import FakeUpstream
from tests.gateway.harness import Keys, Running, make_gateway, routes_for, running


@pytest.fixture
def guarded(catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream) -> Iterator[Running]:
    gateway = make_gateway(
        catalog,
        store,
        routes_for(upstream.base_url),
        header_timeout_s=1.0,
        body_idle_s=1.0,
        max_connections=64,
    )
    with running(gateway) as r:
        yield r


def _connect(r: Running) -> socket.socket:
    host, port = r.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return 0  # closed without an answer
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_slow_headers_are_cut_off(guarded: Running, keys: Keys) -> None:
    socks = [_connect(guarded) for _ in range(40)]
    started = time.monotonic()
    for sock in socks:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and then, nothing more (or a byte at a time)
    for _ in range(3):
        time.sleep(0.3)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.sendall(b"X")
        assert requests.get(f"{guarded.url}/health", timeout=5).status_code == 200, "others are served"
    statuses = [_status(sock) for sock in socks]
    elapsed = time.monotonic() - started
    assert statuses == [408] * 40 and elapsed < 4, (statuses, elapsed)


def test_idle_connection_without_a_byte_is_closed(guarded: Running) -> None:
    sock = _connect(guarded)
    started = time.monotonic()
    assert _status(sock) == 408 and time.monotonic() - started < 3


def test_oversized_headers_are_431(guarded: Running, keys: Keys) -> None:
    sock = _connect(guarded)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    try:
        sock.sendall(head)
        for _ in range(128):  # up to 8 MiB, in 64 KiB pieces: the server stops reading long before
            sock.sendall(b"a" * 65536)
    except OSError:
        pass
    assert _status(sock) == 431
    ok = requests.get(
        f"{guarded.url}/v1/models", headers={"Authorization": f"Bearer {keys.admin}"}, timeout=5
    )
    assert ok.status_code == 200
    normal = {"Authorization": f"Bearer {keys.admin}", "X-Padding": "p" * 16_000}  # large but within bounds
    assert requests.get(f"{guarded.url}/v1/models", headers=normal, timeout=5).status_code == 200


def test_a_body_that_stops_arriving_is_408(guarded: Running, keys: Keys) -> None:
    sock = _connect(guarded)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {keys.admin}\r\nContent-Length: 100\r\n\r\n".encode()
        + b'{"model": '
    )
    started = time.monotonic()
    assert _status(sock) == 408 and time.monotonic() - started < 3
    assert guarded.gateway.metrics.models.get("llama-3.1-8b-instruct") is None or all(
        s.active == 0 for s in guarded.gateway.metrics.models.values()
    )


def test_connections_beyond_the_limit_get_503(guarded: Running, keys: Keys) -> None:
    held = [_connect(guarded) for _ in range(64)]
    try:
        time.sleep(0.2)
        refused = requests.get(f"{guarded.url}/health", timeout=5)
        assert refused.status_code == 503
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert requests.get(f"{guarded.url}/health", timeout=5).status_code == 200

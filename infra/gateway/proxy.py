"""Talking to upstreams: one shared connection pool, fallback before the first byte, timeouts, usage scanning.

The commit point is the first byte sent to the client. Until then a failing target (connection refused or
reset, 5xx, 429, a timeout, an empty body) is skipped for the next one; after it, the caller ends the client's
stream with an explicit error event. Timeouts: connect, first byte (headers plus, for streams, the first chunk),
and idle between chunks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from infra.gateway.errors import GatewayError
from infra.gateway.http_client import HttpPool, Response
from infra.gateway.routing import RouteTable, Target

RETRYABLE = (TimeoutError, OSError)  # connection refused or reset, TLS and protocol errors are OSErrors


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 5.0
    first_byte_s: float = 120.0
    idle_s: float = 30.0


@dataclass
class Opened:
    target: Target
    response: Response
    first: bytes  # the first body chunk (streams) or the whole body (non-streaming)


RequestBuilder = Callable[[Target], tuple[str, bytes, dict[str, str]]]


class Upstreams:
    def __init__(self, routes: RouteTable, timeouts: Timeouts) -> None:
        self.routes = routes
        self.timeouts = timeouts
        self.pool: HttpPool | None = None

    async def start(self) -> None:
        self.pool = HttpPool(connect_timeout_s=self.timeouts.connect_s)

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    async def open(self, targets: list[Target], build: RequestBuilder, stream: bool) -> Opened:
        """The first target that answers usefully; raises 502/503/504 naming what each target did."""
        assert self.pool is not None, "gateway not started"
        if not targets:
            raise GatewayError(503, "no upstream serves this model right now", "upstream_error", code="no_upstream",
                               headers={"Retry-After": "30"})  # fmt: skip
        tried: list[str] = []
        timed_out = False
        for target in targets:
            breaker = self.routes.breaker(target)
            if not breaker.allow():
                tried.append(f"{target.name}: circuit open")
                continue
            url, payload, headers = build(target)
            response: Response | None = None
            try:
                async with asyncio.timeout(self.timeouts.first_byte_s):
                    response = await self.pool.request(url, payload, headers)
                    if response.status >= 500 or response.status == 429:
                        tried.append(f"{target.name}: HTTP {response.status}")
                        breaker.failure()
                        response.release()  # not read to the end: the connection is closed, not reused
                        continue
                    if response.status >= 400 or not stream:
                        body = await response.read()
                        breaker.success()
                        return Opened(target, response, body)
                    first = await response.read_chunk()
                    if not first:
                        raise ConnectionResetError("empty response body")
            except RETRYABLE as exc:
                timed_out = timed_out or isinstance(exc, TimeoutError)
                tried.append(
                    f"{target.name}: {'timeout' if isinstance(exc, TimeoutError) else type(exc).__name__}"
                )
                breaker.failure()
                if response is not None:
                    response.release()
                continue
            breaker.success()
            return Opened(target, response, first)
        status = (
            504
            if timed_out and len(tried) == 1
            else (503 if all("circuit open" in t for t in tried) else 502)
        )
        raise GatewayError(status, "upstream failed: " + "; ".join(tried), "upstream_error", code="upstream_failed",
                           headers={"Retry-After": "5"} if status == 503 else None)  # fmt: skip

    async def chunks(self, opened: Opened) -> Any:
        """The rest of a streamed body, chunk by chunk, each within the idle timeout."""
        response = opened.response
        while True:
            async with asyncio.timeout(self.timeouts.idle_s):
                chunk = await response.read_chunk()
            if not chunk:
                return
            yield chunk


async def wait_healthy(pool: HttpPool, targets: tuple[Target, ...] | list[Target], timeout_s: float) -> bool:
    """Every engine answers GET /health with 200 (polled) before the deadline, over the gateway's own path."""
    deadline = time.monotonic() + timeout_s
    for target in targets:
        url = target.base_url.removesuffix("/v1") + "/health"
        while True:
            try:
                async with asyncio.timeout(5):
                    response = await pool.request(url, b"", {}, method="GET")
                    await response.read()
                    response.release()
                if response.status == 200:
                    break
            except (OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)
    return True


def openai_headers(target: Target) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    return headers


def anthropic_headers(target: Target, version: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "anthropic-version": version}
    if target.api_key:
        headers["x-api-key"] = target.api_key
    return headers


class UsageScanner:
    """Finds token usage in an OpenAI SSE stream (the chunk with ``usage``), tolerating split lines."""

    __slots__ = ("completion_tokens", "done", "prompt_tokens", "tail")

    def __init__(self) -> None:
        self.tail = b""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.done = False

    def feed(self, chunk: bytes) -> None:
        data = self.tail + chunk
        cut = data.rfind(b"\n")
        self.tail = data[cut + 1 :][-65536:] if cut >= 0 else data[-65536:]
        if cut < 0:
            return
        lines = data[:cut]
        if b"[DONE]" in lines:
            self.done = True
        if b'"usage"' not in lines:
            return
        for line in lines.split(b"\n"):
            if line.startswith(b"data:") and b'"usage"' in line:
                try:
                    usage = orjson.loads(line[5:]).get("usage")
                except (orjson.JSONDecodeError, AttributeError):
                    continue
                if isinstance(usage, dict):
                    self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    self.completion_tokens = int(usage.get("completion_tokens") or 0)


def sse_events(buffer: bytearray, chunk: bytes) -> list[bytes]:
    """Complete SSE ``data:`` payloads from ``buffer + chunk`` (the buffer keeps any partial event)."""
    buffer += chunk
    out: list[bytes] = []
    while True:
        cut = buffer.find(b"\n\n")
        if cut < 0:
            return out
        event = bytes(buffer[:cut])
        del buffer[: cut + 2]
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                out.append(line[5:].strip())

"""Talking to upstreams: one shared connection pool, fallback before the first byte, timeouts, usage scanning.

The commit point is the first byte sent to the client. Until then a failing target (connection refused or
reset, 5xx, 429, a timeout, an empty body) is skipped for the next one; after it, the caller ends the client's
stream with an explicit error event. Timeouts: connect, first byte (headers plus, for streams, the first
chunk), and idle between chunks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentcloud.upstream.balance import Balancer, point
from agentcloud.upstream.errors import UpstreamUnavailable
from agentcloud.upstream.http_client import HttpPool, Response
from agentcloud.upstream.target import Breakers, Target

RETRYABLE = (TimeoutError, OSError)  # connection refused or reset, TLS and protocol errors are OSErrors


@dataclass(frozen=True)
class Timeouts:
    """Connect, first byte (headers plus, for streams, the first chunk), and idle between chunks."""

    connect_s: float = 5.0
    first_byte_s: float = 120.0
    idle_s: float = 30.0


@dataclass
class Opened:
    """A target that answered, its response, and the first body chunk already read. `close` once done: it ends
    the response and the target's in-flight count."""

    target: Target
    response: Response
    first: bytes  # the first body chunk (streams) or the whole body (non-streaming)
    balancer: Balancer | None = None
    key: int | None = None  # the affinity key counted in flight at the target

    def close(self) -> None:
        self.response.release()
        if self.balancer is not None:
            self.balancer.release(self.target, self.key)
            self.balancer = None


RequestBuilder = Callable[[Target], tuple[str, bytes, dict[str, str]]]


class Upstreams:
    """The connection pool and the fallback loop over a model's targets."""

    def __init__(self, breakers: Breakers, timeouts: Timeouts, balancer: Balancer | None = None) -> None:
        self.breakers = breakers
        self.balancer = balancer or Balancer()
        self.timeouts = timeouts
        self.pool: HttpPool | None = None

    async def start(self) -> None:
        self.pool = HttpPool(connect_timeout_s=self.timeouts.connect_s)

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    async def open(
        self,
        targets: list[Target],
        build: RequestBuilder,
        stream: bool,
        affinity: bytes | None = None,
        hold_s: float = 0.0,
    ) -> Opened:
        """The first target that answers usefully; raises 502/503/504 naming what each target did. With an
        ``affinity`` key, a request may first wait for its turn, up to ``hold_s`` (see `Balancer.admit`)."""
        assert self.pool is not None, "gateway not started"
        key = point(affinity) if affinity else None
        if key is not None and targets:
            targets = await self.balancer.admit(targets, key, hold_s)
        if not targets:
            raise UpstreamUnavailable(
                "no upstream serves this model right now",
                503,
                code="no_upstream",
                headers={"Retry-After": "30"},
            )
        tried: list[str] = []
        timed_out = False
        for target in targets:
            breaker = self.breakers(target)
            if not breaker.allow():
                tried.append(f"{target.name}: circuit open")
                continue
            url, payload, headers = build(target)
            response: Response | None = None
            self.balancer.acquire(target, key)  # in flight from the moment it is sent (prefill is load too)
            try:
                async with asyncio.timeout(self.timeouts.first_byte_s):
                    response = await self.pool.request(url, payload, headers)
                    if response.status >= 500 or response.status == 429:
                        tried.append(f"{target.name}: HTTP {response.status}")
                        breaker.failure()
                        self.balancer.release(target, key)
                        response.release()  # not read to the end: the connection is closed, not reused
                        continue
                    opened = Opened(target, response, b"", self.balancer, key)
                    if response.status >= 400 or not stream:
                        opened.first = await response.read()
                    else:
                        opened.first = await response.read_chunk()
                        if not opened.first:
                            raise ConnectionResetError("empty response body")
            except RETRYABLE as exc:
                timed_out = timed_out or isinstance(exc, TimeoutError)
                tried.append(
                    f"{target.name}: {'timeout' if isinstance(exc, TimeoutError) else type(exc).__name__}"
                )
                breaker.failure()
                self.balancer.release(target, key)
                if response is not None:
                    response.release()
                continue
            except BaseException:  # cancelled (the client went away): nothing stays counted
                self.balancer.release(target, key)
                if response is not None:
                    response.release()
                raise
            breaker.success()
            return opened
        status = (
            504
            if timed_out and len(tried) == 1
            else (503 if all("circuit open" in t for t in tried) else 502)
        )
        raise UpstreamUnavailable(
            "upstream failed: " + "; ".join(tried),
            status,
            code="upstream_failed",
            headers={"Retry-After": "5"} if status == 503 else None,
        )

    async def chunks(self, opened: Opened) -> Any:
        """The rest of a streamed body, chunk by chunk, each within the idle timeout."""
        response = opened.response
        while True:
            async with asyncio.timeout(self.timeouts.idle_s):
                chunk = await response.read_chunk()
            if not chunk:
                return
            yield chunk


async def wait_healthy(pool: HttpPool, base_urls: list[str], timeout_s: float) -> bool:
    """Every engine answers GET /health with 200 (polled) before the deadline, over the gateway's own path."""
    deadline = time.monotonic() + timeout_s
    for base_url in base_urls:
        url = base_url.removesuffix("/v1") + "/health"
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

"""A lean HTTP/1.1 client for upstream calls: asyncio protocols, httptools' parser, keep-alive pools.

Why not aiohttp or httpx: on this hot path the client decides the gateway's overhead (reference/gateway-
performance.md). This one does only what the gateway needs: POST with a bytes body, a response whose body is
read chunk by chunk as it arrives (chunked, sized or close-delimited), TLS for https upstreams, a pool of idle
keep-alive connections per host, back-pressure on slow readers, and one retry on a pooled connection that the
server closed while idle. A response not read to the end is never returned to the pool.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from agentcloud.upstream.errors import UpstreamProtocolError

HIGH_WATER = 1 << 20
LOW_WATER = 1 << 18
MAX_IDLE_PER_HOST = 512
IDLE_CLOSE_S = 60.0  # an idle pooled connection older than this is closed by `HttpPool.sweep`


@dataclass(frozen=True)
class Endpoint:
    """Scheme, host and port of an upstream: the pool's key."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


class Response:
    """Status and headers are known when the caller gets it; the body arrives through read_chunk()."""

    __slots__ = ("_buffered", "_conn", "_waiter", "chunks", "done", "error", "headers", "status")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: deque[bytes] = deque()
        self._buffered = 0
        self.done = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _feed(self, data: bytes) -> None:
        self.chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    async def read_chunk(self) -> bytes:
        """The next piece of the body as it arrived; b"" at the end. Raises if the connection broke."""
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.done:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self.chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < LOW_WATER:
            self._conn.resume()
        return chunk

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.read_chunk():
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Back to the pool when fully read on a keep-alive connection; otherwise the connection is closed."""
        self._conn.finished(reusable=self.done and self.error is None and not self.chunks)


class _Connection(asyncio.Protocol):
    def __init__(self, pool: HttpPool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.response: Response | None = None
        self.headers_ready: asyncio.Future[None] | None = None
        self.closed = False
        self.keep_alive = False
        self.paused = False
        self.used = 0
        self.idle_since = 0.0  # monotonic time it went back to the pool

    # -- asyncio.Protocol ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if self.parser is None:  # bytes with no request outstanding: the server misbehaves
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("upstream tried to upgrade the connection"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"bad HTTP from upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        r = self.response
        if r is not None and not r.done:
            close_delimited = (
                r.status
                and "content-length" not in r.headers
                and "chunked" not in r.headers.get("transfer-encoding", "")
            )
            if close_delimited and exc is None:  # such a body ends with the connection
                r.done = True
            else:
                r.error = exc or UpstreamProtocolError("upstream closed the connection mid-response")
            r._wake()
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_exception(exc or ConnectionResetError("upstream closed the connection"))

    # -- httptools callbacks ---------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self.response is not None and self.parser is not None
        self.response.status = self.parser.get_status_code()
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._feed(bytes(body))

    def on_message_complete(self) -> None:
        assert self.response is not None and self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()
        self.response.done = True
        self.response._wake()

    # -- use ---------------------------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if self.response is not None:
            self.response.error = exc
            self.response._wake()
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_exception(exc)
        self.close()

    def send(self, data: bytes) -> Response:
        assert self.transport is not None
        self.used += 1
        self.response = Response(self)
        self.parser = httptools.HttpResponseParser(self)
        self.headers_ready = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.response

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def finished(self, reusable: bool) -> None:
        self.response, self.parser, self.headers_ready = None, None, None
        if reusable and self.keep_alive and not self.closed:
            self.resume()
            self.pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpPool:
    """Keep-alive connections per upstream, with one retry on a connection the server closed while idle."""

    def __init__(self, connect_timeout_s: float = 5.0) -> None:
        self.connect_timeout_s = connect_timeout_s
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._tls = ssl.create_default_context()
        self.connections_opened = 0

    def endpoint(self, url: str) -> Endpoint:
        ep = self._endpoints.get(url)
        if ep is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"unsupported upstream URL: {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            ep = Endpoint(parts.scheme, parts.hostname, port, path)
            if len(self._endpoints) < 10_000:
                self._endpoints[url] = ep
        return ep

    def put_back(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) < MAX_IDLE_PER_HOST:
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            conn.close()

    def sweep(self, idle_s: float = IDLE_CLOSE_S, now: float | None = None) -> int:
        """Close pooled connections idle for longer than ``idle_s`` (the oldest are first in each list:
        reuse takes the newest); returns how many were closed."""
        now = time.monotonic() if now is None else now
        closed = 0
        for key, conns in list(self._idle.items()):
            keep = [c for c in conns if not c.closed and now - c.idle_since <= idle_s]
            for c in conns:
                if c not in keep and not c.closed:
                    c.close()
                    closed += 1
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        return closed

    async def _connect(self, ep: Endpoint, address: str | None = None) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout_s):
            _, conn = await loop.create_connection(
                lambda: _Connection(self, ep.key if address is None else (ep.scheme, address, ep.port)),
                address or ep.host,
                ep.port,
                ssl=self._tls if ep.scheme == "https" else None,
                server_hostname=ep.host if ep.scheme == "https" else None,
            )
        self.connections_opened += 1
        return conn

    async def request(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        method: str = "POST",
        address: str | None = None,
    ) -> Response:
        """Send; return once the status and headers are in. The caller must release() the response.
        ``address`` pins the IP to connect to (the Host header and TLS name stay the URL's): checked webhook
        targets use it, so DNS cannot change between the check and the connection; such connections are not
        pooled."""
        ep = self.endpoint(url)
        head = [f"{method} {ep.path} HTTP/1.1\r\nHost: {ep.host}\r\nContent-Length: {len(body)}\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in headers.items()]
        data = "".join(head).encode("latin-1") + b"\r\n" + body
        if address is not None:
            return await self._exchange(await self._connect(ep, address), data)
        idle = self._idle.get(ep.key)
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            try:
                return await self._exchange(conn, data)
            except (ConnectionResetError, UpstreamProtocolError, BrokenPipeError):
                # The server closed this idle connection as we reused it, before answering: try a fresh one.
                if conn.response is not None and conn.response.status:
                    raise
        return await self._exchange(await self._connect(ep), data)

    async def _exchange(self, conn: _Connection, data: bytes) -> Response:
        response = conn.send(data)
        try:
            assert conn.headers_ready is not None
            await conn.headers_ready
        except BaseException:
            conn.close()
            raise
        return response

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

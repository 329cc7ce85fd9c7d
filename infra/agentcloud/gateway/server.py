"""Run a gateway process with uvicorn (uvloop event loop, httptools parser), guarded against slow and
oversized clients.

uvicorn bounds idle keep-alive connections but not a client that sends its headers slowly (slowloris), nor the
size of the headers, nor a body that stops arriving. `GuardedProtocol` adds those bounds at the protocol
level, before any request reaches the application:
- the request line and headers must arrive within ``header_timeout_s`` of their first byte (else 408);
- they may not exceed ``max_header_bytes`` (else 431);
- a request body may not pause for more than ``body_idle_s`` between two reads (else 408; a long upload that
  keeps sending is fine);
- at most ``max_connections`` connections and requests at once (uvicorn's `limit_concurrency`: 503 beyond).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("agentcloud.gateway")


@dataclass(frozen=True)
class ServerLimits:
    """Connection-level bounds (AGENTCLOUD_HEADER_TIMEOUT_S and friends, see config.py)."""

    header_timeout_s: float = 10.0
    body_idle_s: float = 30.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 4096
    keep_alive_s: float = 75.0


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines and a header size bound."""

    limits = ServerLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = "headers"  # headers -> body -> done (then headers again on keep-alive)
        self._since = self._last_data = 0.0
        self._header_bytes = 0
        self._refusal: tuple[int, str] | None = None
        self._guard: asyncio.TimerHandle | None = None

    # -- the guard: one timer per connection, armed while a request is arriving ---------------------------
    def _arm(self, delay_s: float) -> None:
        if self._guard is None:
            self._guard = self.loop.call_later(delay_s, self._check)

    def _check(self) -> None:
        self._guard = None
        if self.transport.is_closing() or self._phase == "done":
            return
        now = self.loop.time()
        if self._phase == "headers":
            left = self.limits.header_timeout_s - (now - self._since)
            if left <= 0:
                self._refuse(408, "request headers not received in time")
                return
        else:
            left = self.limits.body_idle_s - (now - self._last_data)
            if left <= 0:
                self._refuse(408, "request body stopped arriving")
                return
        self._arm(left)

    def _refuse(self, status: int, message: str) -> None:
        self._refusal = (status, message)
        self.send_400_response(message)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the handler reading the body sees the client gone
            self.cycle.message_event.set()

    # -- protocol and parser callbacks --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self._last_data = self.loop.time()
        self._arm(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        self._last_data = self.loop.time()
        if self._phase != "body":  # bytes of a request line and headers (a value counts while it grows)
            self._header_bytes += len(data)
        super().data_received(data)
        if self._phase == "headers" and self._header_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"request headers exceed {self.limits.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase, self._since = "headers", self.loop.time()
        self._arm(self.limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._phase = "body"
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase, self._header_bytes = "done", 0  # the next request's bytes count from here
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse; here also to one refused by a bound."""
        if self._refusal is None:
            super().send_400_response(msg)
            return
        status, message = self._refusal
        body = message.encode()
        head = (
            STATUS_LINE[status]
            + b"content-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
        )
        if not self.transport.is_closing():
            self.transport.write(head + body)
            self.transport.close()


def server_config(app: Any, host: str, port: int, limits: ServerLimits | None = None) -> Any:
    """The uvicorn configuration of a gateway process (tests serve with the same one)."""
    import uvicorn

    limits = limits or ServerLimits()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=type("Guarded", (GuardedProtocol,), {"limits": limits}),
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        log_level="warning",
        timeout_keep_alive=int(limits.keep_alive_s),
        limit_concurrency=limits.max_connections,
        backlog=4096,
    )


def limits_of(config: Any) -> ServerLimits:
    """The bounds a GatewayConfig sets."""
    return ServerLimits(
        config.header_timeout_s, config.body_idle_s, config.max_header_bytes, config.max_connections
    )


def serve(app: Any, host: str, port: int, limits: ServerLimits | None = None) -> None:
    import uvicorn

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.Server(server_config(app, host, port, limits)).run()

"""Minimal ASGI plumbing for the gateway: a per-request context, bounded body reads and responses."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from agentcloud.gateway.errors import GatewayError, bad_request
from agentcloud.store.keys import KeyRecord

_PROCESS = secrets.token_hex(
    4
)  # request ids: unique per process start, then a counter (no syscall per request)
_COUNTER = itertools.count(1)
WATCH_AFTER_S = 0.5
Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]
JSON_CT = (b"content-type", b"application/json")
MAX_JSON_DEPTH = 64  # objects and arrays within each other (tool schemas use about 10)


@dataclass
class Request:
    """One HTTP request as the middleware and handlers see it: headers, bounded body reads, the caller's key
    (set by authentication), the upstream calls to settle (accounting), and the response helpers."""

    scope: Scope
    receive: Any
    send: Any
    params: dict[str, str]
    anthropic: bool = False  # error bodies in Anthropic's shape (/v1/messages)
    headers: dict[bytes, bytes] = field(default_factory=dict)
    extra_headers: Headers = field(default_factory=list)  # added to every response (rate-limit headers)
    request_id: str = field(default_factory=lambda: f"{_PROCESS}-{next(_COUNTER):x}")
    started: bool = False  # response start sent: from here on, errors go into the body
    status: int = 0  # the response's status, once started
    finished: bool = False
    disconnected: bool = False
    raw: bytes = b""
    watcher: asyncio.Task[None] | asyncio.TimerHandle | None = None
    key: KeyRecord | None = None  # set by the authentication middleware on routes that need a key
    calls: list[Any] = field(default_factory=list)  # upstream calls the accounting middleware settles
    # called before the response's last byte (the accounting middleware journals the calls' usage there)
    before_last_byte: Callable[[Request], None] | None = None

    @property
    def caller(self) -> KeyRecord:
        """The authenticated key (only on routes behind the authentication middleware)."""
        assert self.key is not None, "route is not behind the authentication middleware"
        return self.key

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    def query(self) -> dict[str, str]:
        """The query string's parameters (the last value of a repeated one)."""
        raw = self.scope.get("query_string", b"").decode("latin-1")
        return dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    async def body(self, limit: int) -> bytes:
        length = self.headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise GatewayError(413, f"request body exceeds {limit} bytes", code="request_too_large")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise asyncio.CancelledError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, f"request body exceeds {limit} bytes", code="request_too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                self.raw = b"".join(chunks)
                self._watch_disconnect()
                return self.raw

    def _watch_disconnect(self) -> None:
        """Once the body is read, a client disconnect cancels the handler (and so its upstream request).

        The watcher starts after WATCH_AFTER_S: most requests are over by then, and a timer is much cheaper
        than a task per request; a client that leaves a long generation or stream is noticed within that
        delay."""
        handler = asyncio.current_task()
        if handler is not None:
            self.watcher = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start_watch, handler)

    def _start_watch(self, handler: asyncio.Task[Any]) -> None:
        async def watch() -> None:
            while True:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    if not self.finished:
                        self.disconnected = True
                        handler.cancel()
                    return

        if not self.finished:
            self.watcher = asyncio.get_running_loop().create_task(watch())

    def stop_watching(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None

    async def json_object(self, limit: int) -> dict[str, Any]:
        raw = await self.body(limit)
        if not raw:
            raise bad_request("request body is empty; send a JSON object")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"request body is not valid JSON: {exc.msg} at position {exc.pos}") from None
        if not isinstance(data, dict):
            raise bad_request("request body must be a JSON object")
        # Bound the nesting (it must survive re-serialization, and upstreams parse it too). Counting brackets
        # is a memchr-speed scan; only a body with that many brackets is walked.
        if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and too_deep(data, MAX_JSON_DEPTH):
            raise bad_request(
                f"request body is nested more than {MAX_JSON_DEPTH} levels deep", code="too_deep"
            )
        return data

    def _headers(self, content_type: bytes, extra: Headers) -> Headers:
        return [
            (b"content-type", content_type),
            (b"x-request-id", self.request_id.encode()),
            *self.extra_headers,
            *extra,
        ]

    async def start(self, status: int, content_type: bytes, extra: Headers | None = None) -> None:
        self.status = status
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": self._headers(content_type, extra or []),
            }
        )
        self.started = True

    async def write(self, data: bytes, more: bool = True) -> None:
        if not more and self.calls and self.before_last_byte is not None:
            self.before_last_byte(self)
        await self.send({"type": "http.response.body", "body": data, "more_body": more})
        if not more:
            self.finished = True

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"application/json",
        extra: Headers | None = None,
    ) -> None:  # type: ignore[assignment]
        await self.start(status, content_type, [(b"content-length", str(len(body)).encode()), *(extra or [])])
        await self.write(body, more=False)

    async def json(self, data: Any, status: int = 200) -> None:
        await self.respond(status, orjson.dumps(data))

    async def error(self, err: GatewayError) -> None:
        body = err.anthropic_body() if self.anthropic else err.openai_body()
        extra = [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
        await self.respond(err.status, body, extra=extra)


def parse_headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", ())}


def bearer_token(req: Request) -> str | None:
    auth = req.headers.get(b"authorization")
    if auth is not None:
        scheme, _, token = auth.decode("latin-1").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    key = req.headers.get(b"x-api-key")  # the Anthropic SDK's header
    return key.decode("latin-1").strip() if key else None


def too_deep(data: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels (iterative: no recursion to overflow)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False

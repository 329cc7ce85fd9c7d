"""A fake OpenAI-compatible upstream on 127.0.0.1 with tunable latency, streaming and faults.

Behaviour comes from directives in the last message's content (so they pass through the gateway untouched) or
from ``defaults`` set on the server: ``[[fault=500]]``, ``[[fault=429]]``, ``[[fault=close]]`` (drop the
connection before answering), ``[[fault=midstream]]`` (abort after two chunks), ``[[fault=nodone]]`` (end
without [DONE]), ``[[delay=S]]`` (before the headers), ``[[stall=S]]`` (after the first chunk),
``[[chunks=N]]``, ``[[gap=S]]`` (between chunks), ``[[tool]]`` (answer with a tool call)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web

DIRECTIVE = re.compile(r"\[\[(\w+)(?:=([\w.]+))?\]\]")


@dataclass
class Stats:
    requests: int = 0
    completed_streams: int = 0
    broken_streams: int = 0  # the client (the gateway) went away mid-stream
    active: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


def _directives(body: dict[str, Any], defaults: dict[str, str]) -> dict[str, str]:
    found = dict(defaults)
    messages = body.get("messages") or []
    text = ""
    if messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
        text = content if isinstance(content, str) else json.dumps(content)
    for name, value in DIRECTIVE.findall(text):
        found[name] = value or "1"
    return found


def _last_text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content", "")
    return content if isinstance(content, str) else "…"


class FakeUpstream:
    def __init__(self, defaults: dict[str, str] | None = None, model_name: str | None = None) -> None:
        self.defaults = defaults or {}
        self.stats = Stats()
        self.model_name = model_name
        self.metrics_text = "vllm:num_requests_waiting 0\nvllm:num_requests_running 0\n"
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- handlers -------------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        body = await request.json()
        self.stats.bodies.append(body)
        self.stats.headers.append(dict(request.headers))
        d = _directives(body, self.defaults)
        if "delay" in d:
            await asyncio.sleep(float(d["delay"]))
        fault = d.get("fault")
        if fault in ("500", "429", "400"):
            return web.json_response(
                {"error": {"message": f"injected {fault}", "type": "fault"}}, status=int(fault)
            )
        if fault == "close":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        model = self.model_name or body.get("model", "fake")
        words = f"echo: {_last_text(body)}".split()
        usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
        tool = "tool" in d
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": None if tool else " ".join(words)}
            if tool:
                message["tool_calls"] = [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ]
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop"}
                    ],
                    "usage": usage,
                }
            )
        return await self._stream(request, body, d, model, words, usage, tool)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        d: dict[str, str],
        model: str,
        words: list[str],
        usage: dict[str, int],
        tool: bool,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.stats.active += 1

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        n = int(d.get("chunks", "0")) or len(words)
        pieces = (
            ([" ".join(words)] if n == 1 else (words + ["…"] * max(0, n - len(words)))[:n])
            if not tool
            else []
        )
        gap = float(d.get("gap", "0"))
        try:
            await resp.write(chunk({"role": "assistant", "content": ""}))
            if "stall" in d:
                await asyncio.sleep(float(d["stall"]))
            if tool:
                await resp.write(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                for part in ('{"city": ', '"Paris"}'):
                    await resp.write(chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
            for i, piece in enumerate(pieces):
                if d.get("fault") == "midstream" and i == 2:
                    assert request.transport is not None
                    request.transport.abort()
                    self.stats.broken_streams += 1
                    return resp
                await resp.write(chunk({"content": (" " if i else "") + piece}))
                if gap:
                    await asyncio.sleep(gap)
            await resp.write(chunk({}, "tool_calls" if tool else "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                await resp.write(
                    b"data: "
                    + json.dumps(
                        {
                            "id": "chatcmpl-1",
                            "object": "chat.completion.chunk",
                            "created": 0,
                            "model": model,
                            "choices": [],
                            "usage": usage,
                        }
                    ).encode()
                    + b"\n\n"
                )
            if d.get("fault") != "nodone":
                await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            self.stats.completed_streams += 1
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError, RuntimeError):
            self.stats.broken_streams += 1
            raise
        finally:
            self.stats.active -= 1
        return resp

    async def embeddings(self, request: web.Request) -> web.Response:
        self.stats.requests += 1
        body = await request.json()
        self.stats.bodies.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t) % 7), 0.5, 0.25]}
            for i, t in enumerate(inputs)
        ]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": len(inputs) * 3, "total_tokens": len(inputs) * 3},
            }
        )

    async def rerank(self, request: web.Request) -> web.Response:
        self.stats.requests += 1
        body = await request.json()
        query = set(body["query"].lower().split())
        results = [
            {
                "index": i,
                "relevance_score": len(query & set(doc.lower().split())) / (len(query) or 1),
                "document": {"text": doc},
            }
            for i, doc in enumerate(body["documents"])
        ]
        return web.json_response({"id": "rerank-1", "results": results, "usage": {"total_tokens": 10}})

    async def transcriptions(self, request: web.Request) -> web.Response:
        self.stats.requests += 1
        form = await request.post()
        audio = form["file"]
        size = len(audio.file.read()) if hasattr(audio, "file") else 0
        model = form.get("model")
        return web.json_response(
            {"text": f"heard {size} bytes with {model if isinstance(model, str) else ''}"}
        )

    async def speech(self, request: web.Request) -> web.Response:
        self.stats.requests += 1
        body = await request.json()
        return web.Response(body=b"ID3" + body["input"].encode()[:32], content_type="audio/x-fake-mpeg")

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics_text, content_type="text/plain")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.model_name or "fake", "object": "model"}]}
        )

    # -- running --------------------------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application(handler_args={"tcp_keepalive": False})
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/rerank", self.rerank)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.prometheus)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = cast(asyncio.Server, server).sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def start(self) -> FakeUpstream:
        """Start serving (again, on the same port after `stop`)."""
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


@contextmanager
def fake_upstream(**kw: Any) -> Iterator[FakeUpstream]:
    server = FakeUpstream(**kw).start()
    try:
        yield server
    finally:
        server.stop()

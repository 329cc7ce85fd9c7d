"""Server-sent events: usage found in an OpenAI stream, and complete events split from chunks (pure)."""

from __future__ import annotations

import orjson


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

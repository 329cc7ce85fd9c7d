"""Server-sent events: usage found in an OpenAI stream, and complete events split from chunks (pure)."""

from __future__ import annotations

import orjson


class UsageScanner:
    """Finds token usage in an OpenAI SSE stream (the chunk with ``usage``), tolerating split lines."""

    __slots__ = ("completion_tokens", "deltas", "done", "prompt_tokens", "tail")

    def __init__(self) -> None:
        self.tail = b""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.deltas = 0  # content chunks seen: what was relayed, when the stream stops before its usage
        self.done = False

    def feed(self, chunk: bytes) -> None:
        data = self.tail + chunk
        cut = data.rfind(b"\n")
        self.tail = data[cut + 1 :][-65536:] if cut >= 0 else data[-65536:]
        if cut < 0:
            return
        lines = data[:cut]
        self.deltas += lines.count(b'"content":"') + lines.count(b'"content": "')
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


class UsageFilter:
    """Removes token usage from an OpenAI stream whose client did not ask for it (the gateway always asks the
    upstream, to meter every stream): a usage-only event is dropped, a usage field on another event removed.

    Complete events pass at once; an incomplete one waits for its end (events are small)."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self.pending + chunk
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self.pending = data
            return b""
        complete, self.pending = data[: cut + 2], data[cut + 2 :]
        if b'"usage"' not in complete:
            return complete
        out = []
        for event in complete.split(b"\n\n")[:-1]:
            if b'"usage"' in event and event.startswith(b"data:"):
                try:
                    obj = orjson.loads(event[5:])
                except orjson.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict) and "usage" in obj:
                    if not obj.get("choices"):
                        continue  # the usage-only event
                    del obj["usage"]
                    event = b"data: " + orjson.dumps(obj)
            out.append(event + b"\n\n")
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self.pending = self.pending, b""
        return rest

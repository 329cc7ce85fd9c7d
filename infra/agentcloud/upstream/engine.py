"""What an engine says about itself: its queue from Prometheus text (vLLM's and llama.cpp's /metrics)."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

from agentcloud.upstream.http_client import HttpPool

# waiting and running requests on an engine: vLLM, then llama.cpp
QUEUE_METRICS = {
    "waiting": ("vllm:num_requests_waiting", "llamacpp:requests_deferred"),
    "running": ("vllm:num_requests_running", "llamacpp:requests_processing"),
}
SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+([0-9.eE+-]+)$")


def parse_queue(text: str) -> tuple[int, int]:
    """(waiting, running) from Prometheus text, summed over label sets."""
    totals = {"waiting": 0.0, "running": 0.0}
    for line in text.splitlines():
        found = SAMPLE.match(line.strip())
        if found:
            for kind, names in QUEUE_METRICS.items():
                if found.group(1) in names:
                    totals[kind] += float(found.group(2))
    return int(totals["waiting"]), int(totals["running"])


@dataclass(frozen=True)
class EngineState:
    """One engine as a probe found it."""

    healthy: bool
    waiting: int = 0
    running: int = 0
    slots: int | None = None  # llama.cpp's parallel slots (its /props), each holding one prompt's cache


async def probe(
    pool: HttpPool, base_url: str, api_key: str | None, timeout_s: float = 5.0, with_slots: bool = False
) -> EngineState:
    """GET /health, then /metrics (behind the engine's API key on llama.cpp) for its queue; ``with_slots``:
    and a llama.cpp engine's slot count (/props)."""
    root = base_url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with asyncio.timeout(timeout_s):
            response = await pool.request(root + "/health", b"", headers, method="GET")
            await response.read()
            response.release()
            if response.status != 200:
                return EngineState(False)
            response = await pool.request(root + "/metrics", b"", headers, method="GET")
            body = await response.read()
            response.release()
            text = body.decode("utf-8", "replace") if response.status == 200 else ""
            slots = None
            if "llamacpp:" in text and with_slots:
                response = await pool.request(root + "/props", b"", headers, method="GET")
                props = await response.read()
                response.release()
                slots = _total_slots(props) if response.status == 200 else None
    except (OSError, TimeoutError):
        return EngineState(False)
    waiting, running = parse_queue(text)
    return EngineState(True, waiting, running, slots)


def _total_slots(props: bytes) -> int | None:
    try:
        value = json.loads(props).get("total_slots")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None

"""What an engine says about itself: its queue from Prometheus text (vLLM's and llama.cpp's /metrics)."""

from __future__ import annotations

import asyncio
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


async def probe(pool: HttpPool, base_url: str, api_key: str | None, timeout_s: float = 5.0) -> EngineState:
    """GET /health, then /metrics (behind the engine's API key on llama.cpp) for its queue."""
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
    except (OSError, TimeoutError):
        return EngineState(False)
    waiting, running = parse_queue(body.decode("utf-8", "replace")) if response.status == 200 else (0, 0)
    return EngineState(True, waiting, running)

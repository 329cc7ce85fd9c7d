"""The twin of DigitalOcean's v2 API (agentcloud.twin.api) on 127.0.0.1 for tests, with a small default size
list, pages of at most 2 sizes (to exercise pagination) and a fixed token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agentcloud.twin.api import Twin, serve_twin

TOKEN = "dop_v1_test_token_for_local_server"

SIZES: list[dict[str, Any]] = [
    {"slug": "s-1vcpu-1gb", "available": True, "regions": ["nyc2", "atl1"], "price_hourly": 0.009},
    {
        "slug": "gpu-h100x1-80gb",
        "available": True,
        "regions": ["nyc2", "tor1"],
        "price_hourly": 3.39,
        "gpu_info": {"count": 1, "model": "nvidia_h100", "vram": {"amount": 80, "unit": "gib"}},
    },
    {"slug": "gpu-h200x1-141gb", "available": True, "regions": ["atl1"], "price_hourly": 3.44},
    {"slug": "gpu-mi300x1-192gb", "available": True, "regions": ["atl1"], "price_hourly": 1.99},
    {"slug": "gpu-l40sx1-48gb", "available": False, "regions": [], "price_hourly": 1.57},
]

LAST: list[Twin] = []  # the twin of the latest `fake_digitalocean()`, for tests that read its requests


class _SmallPages(Twin):
    def _sizes(self, method: str, rest: list[str], q: dict[str, list[str]], body: dict[str, Any]) -> Any:
        return super()._sizes(
            method, rest, {**q, "per_page": [str(min(int((q.get("per_page") or ["20"])[0]), 2))]}, body
        )


@contextmanager
def fake_digitalocean(sizes: list[dict[str, Any]] | None = None) -> Iterator[str]:
    """The twin on a free port; ``sizes`` replaces the default size list (and is read live: edit it to change
    what the API answers)."""
    twin = _SmallPages(token=TOKEN, sizes=SIZES if sizes is None else sizes)
    LAST[:] = [twin]
    with serve_twin(twin) as url:
        yield url

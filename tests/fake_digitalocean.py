"""A local stand-in for DigitalOcean's GET /v2/sizes (127.0.0.1 only), paginated like the real API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

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


class _Handler(BaseHTTPRequestHandler):
    sizes: ClassVar[list[dict[str, Any]]] = SIZES
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.requests.append(self.path)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._send(401, {"id": "unauthorized", "message": "Unable to authenticate you."})
        if url.path != "/v2/sizes":
            return self._send(
                404, {"id": "not_found", "message": "The resource you requested could not be found."}
            )
        q = parse_qs(url.query)
        per_page, page = int(q.get("per_page", ["20"])[0]), int(q.get("page", ["1"])[0])
        # Pages of at most 2, whatever was asked, to exercise pagination.
        size = min(per_page, 2)
        chunk = self.sizes[(page - 1) * size : page * size]
        self._send(200, {"sizes": chunk, "links": {}, "meta": {"total": len(self.sizes)}})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextmanager
def fake_digitalocean(sizes: list[dict[str, Any]] | None = None) -> Iterator[str]:
    """The stand-in on a free port; ``sizes`` replaces the default size list for this server."""
    handler = _Handler if sizes is None else type("Sizes", (_Handler,), {"sizes": sizes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    _Handler.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

"""A local stand-in for DigitalOcean's v2 API (127.0.0.1 only): GET /v2/sizes, paginated like the real API,
and droplets (POST, GET by tag, DELETE) with DigitalOcean's error shapes: a size not offered in a region is
422 "Size is not available in this region.", as the real API answers a create."""

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
    droplets: ClassVar[dict[int, dict[str, Any]]] = {}
    regions: ClassVar[list[dict[str, Any]]] = [
        {"slug": slug, "name": name, "available": True}
        for slug, name in (
            ("nyc2", "New York 2"),
            ("tor1", "Toronto 1"),
            ("atl1", "Atlanta 1"),
            ("ams3", "Amsterdam 3"),
        )
    ]

    def _authorized(self) -> bool:
        self.requests.append(f"{self.command} {self.path}")
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, {"id": "unauthorized", "message": "Unable to authenticate you."})
            return False
        return True

    def do_POST(self) -> None:
        if not self._authorized():
            return
        if urlparse(self.path).path != "/v2/droplets":
            return self._send(
                404, {"id": "not_found", "message": "The resource you requested could not be found."}
            )
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        missing = [k for k in ("name", "region", "size", "image") if not body.get(k)]
        if missing:
            return self._send(422, {"id": "unprocessable_entity", "message": f"{missing[0]} is required"})
        size = next((s for s in self.sizes if s["slug"] == body["size"]), None)
        if size is None:
            return self._send(422, {"id": "unprocessable_entity", "message": "Size is invalid."})
        if not size.get("available", True) or body["region"] not in size.get("regions", []):
            return self._send(
                422, {"id": "unprocessable_entity", "message": "Size is not available in this region."}
            )
        n = len(self.droplets) + 1001
        droplet = {
            "id": n,
            "name": body["name"],
            "status": "new",
            "size_slug": body["size"],
            "region": {"slug": body["region"]},
            "image": {"slug": body["image"]},
            "tags": list(body.get("tags") or []),
            "vpc_uuid": body.get("vpc_uuid"),
            "networks": {
                "v4": [
                    {"ip_address": f"10.10.0.{n % 250}", "type": "private"},
                    {"ip_address": f"198.51.100.{n % 250}", "type": "public"},
                ]
            },
        }
        self.droplets[n] = droplet
        self._send(202, {"droplet": droplet, "links": {}})

    def do_DELETE(self) -> None:
        if not self._authorized():
            return
        parts = urlparse(self.path).path.rstrip("/").split("/")
        if parts[:3] != ["", "v2", "droplets"] or len(parts) != 4 or not parts[3].isdigit():
            return self._send(
                404, {"id": "not_found", "message": "The resource you requested could not be found."}
            )
        if self.droplets.pop(int(parts[3]), None) is None:
            return self._send(
                404, {"id": "not_found", "message": "The resource you requested could not be found."}
            )
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if not self._authorized():
            return
        if url.path == "/v2/droplets":
            tag = parse_qs(url.query).get("tag_name", [None])[0]
            found = [d for d in self.droplets.values() if tag is None or tag in d["tags"]]
            return self._send(200, {"droplets": found, "links": {}, "meta": {"total": len(found)}})
        if url.path == "/v2/regions":
            return self._send(
                200, {"regions": self.regions, "links": {}, "meta": {"total": len(self.regions)}}
            )
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
    handler = _Handler if sizes is None else type("Sizes", (_Handler,), {"sizes": sizes, "droplets": {}})
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

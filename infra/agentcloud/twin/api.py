"""A twin of DigitalOcean's v2 API for one machine: the part that pydo and the Pulumi program's resources use.

Account, sizes (with prices and regions, paginated), regions, droplets, volumes and their attach/detach
actions, firewalls and the droplets they cover, VPCs and tags, answered with DigitalOcean's shapes: its error
body (``{"id", "message", "request_id"}``), 404 ``not_found``, 422 ``unprocessable_entity`` (a size a region
does not offer: "Size is not available in this region."), 429 ``too_many_requests`` with ``Retry-After`` and
the ``RateLimit-*`` headers. Faults are injected through ``Twin.faults``: a size unavailable in a region, the
next N requests rate limited, droplets that never boot.

A droplet is created ``new`` and turns ``active`` after ``boot_s`` unless told never to; ``on_create``,
``on_delete`` and ``on_attach`` let a caller make droplets real hosts (twin/hosts.py). Volumes outlive
droplets; deleting a droplet detaches them. State is in memory, one lock, bounded by what tests make.
127.0.0.1 only."""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

Json = dict[str, Any]
DEFAULT_VPC_RANGE = "10.100.0.0/16"
TAG = re.compile(r"[A-Za-z0-9_:-]{1,255}")  # DigitalOcean's rule for tag names
Query = dict[str, list[str]]
Answer = tuple[int, Json | None]

DEFAULT_REGIONS = (
    ("nyc2", "New York 2"),
    ("tor1", "Toronto 1"),
    ("atl1", "Atlanta 1"),
    ("ams3", "Amsterdam 3"),
    ("ric1", "Richmond 1"),
)


class ApiError(Exception):
    def __init__(self, status: int, ident: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.ident, self.message, self.headers = status, ident, message, headers or {}


def not_found() -> ApiError:
    return ApiError(404, "not_found", "The resource you requested could not be found.")


def invalid(message: str) -> ApiError:
    return ApiError(422, "unprocessable_entity", message)


@dataclass
class Faults:
    """What the twin gets wrong on purpose."""

    unavailable: set[tuple[str, str]] = field(default_factory=set)  # (size slug, region)
    rate_limited: int = 0  # the next N requests answer 429
    retry_after_s: int = 1
    never_boot: set[str] = field(default_factory=set)  # droplet names that stay "new"


@dataclass
class Twin:
    """The twin's state and behaviour; `serve_twin` puts it behind HTTP."""

    token: str
    sizes: list[Json]
    regions: list[Json] = field(
        default_factory=lambda: [
            {"slug": s, "name": n, "available": True, "features": ["private_networking"]}
            for s, n in DEFAULT_REGIONS
        ]
    )
    boot_s: float = 0.0
    faults: Faults = field(default_factory=Faults)
    on_create: Callable[[Json, str | None], None] | None = None
    on_delete: Callable[[int], None] | None = None
    on_attach: Callable[[int, Json], None] | None = None  # (droplet id, volume)
    droplets: dict[int, Json] = field(default_factory=dict)
    volumes: dict[str, Json] = field(default_factory=dict)
    firewalls: dict[str, Json] = field(default_factory=dict)
    vpcs: dict[str, Json] = field(default_factory=dict)
    tags: dict[str, Json] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(3_000_001))
    _booted_at: dict[int, float] = field(default_factory=dict)

    # -- dispatch --------------------------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Json
    ) -> tuple[int, Json | None]:
        with self.lock:
            self.requests.append(f"{method} {path}")
            if self.faults.rate_limited > 0:
                self.faults.rate_limited -= 1
                raise ApiError(
                    429,
                    "too_many_requests",
                    "API rate limit exceeded.",
                    {"Retry-After": str(self.faults.retry_after_s), "RateLimit-Remaining": "0"},
                )
            parts = [p for p in path.split("/") if p][1:]  # after "v2"
            if not parts:
                raise not_found()
            route = getattr(self, f"_{parts[0].replace('-', '_')}", None)
            if route is None:
                raise not_found()
            result: Answer = route(method, parts[1:], query, body)
            return result

    # -- read-only -------------------------------------------------------------------------------------------
    def _account(self, method: str, rest: list[str], q: Query, body: Json) -> Answer:
        account = {"droplet_limit": 25, "volume_limit": 100, "email": "twin@example.com", "status": "active"}
        return 200, {"account": {**account, "uuid": "twin", "email_verified": True}}

    def _sizes(self, method: str, rest: list[str], q: Query, body: Json) -> Answer:
        return 200, _page(q, "sizes", self.sizes)

    def _regions(self, method: str, rest: list[str], q: Query, body: Json) -> Answer:
        return 200, _page(q, "regions", self.regions)

    # -- droplets --------------------------------------------------------------------------------------------
    def _droplets(
        self, method: str, rest: list[str], q: dict[str, list[str]], body: Json
    ) -> tuple[int, Json | None]:
        if method == "POST" and not rest:
            names = body.get("names") or ([body["name"]] if body.get("name") else [])
            if not names:
                raise invalid("name is required")
            made = [self._create_droplet({**body, "name": n}) for n in names]
            return 202, ({"droplets": made} if body.get("names") else {"droplet": made[0]})
        if method == "GET" and not rest:
            tag = _arg(q, "tag_name")
            found = [self._view(d) for d in self.droplets.values() if tag is None or tag in d["tags"]]
            return 200, _page(q, "droplets", found)
        if method == "DELETE" and not rest:
            tag = _arg(q, "tag_name")
            if not tag:
                raise invalid("tag_name is required to delete droplets by tag")
            for d in [d for d in self.droplets.values() if tag in d["tags"]]:
                self._delete_droplet(int(d["id"]))
            return 204, None
        droplet = self._droplet(rest[0]) if rest else None
        if droplet is None:
            raise not_found()
        if method == "GET" and len(rest) == 1:
            return 200, {"droplet": self._view(droplet)}
        if method == "DELETE" and len(rest) == 1:
            self._delete_droplet(int(droplet["id"]))
            return 204, None
        raise not_found()

    def _create_droplet(self, body: Json) -> Json:
        for key in ("name", "region", "size", "image"):
            if not body.get(key):
                raise invalid(f"{key} is required")
        size = next((s for s in self.sizes if s["slug"] == body["size"]), None)
        if size is None:
            raise invalid("Size is invalid.")
        region = body["region"]
        if (
            not size.get("available", True)
            or region not in size.get("regions", [])
            or (body["size"], region) in self.faults.unavailable
        ):
            raise invalid("Size is not available in this region.")
        bad = [t for t in body.get("tags") or [] if not TAG.fullmatch(str(t))]
        if bad:
            raise invalid(f"tag {bad[0]!r} is invalid: letters, numbers, colons, dashes and underscores only")
        if body.get("vpc_uuid") and body["vpc_uuid"] not in self.vpcs:
            raise invalid("vpc_uuid does not name a VPC of this account.")
        n = next(self._ids)
        droplet = {
            "id": n,
            "name": body["name"],
            "status": "new",
            "size_slug": body["size"],
            "size": {"slug": body["size"], "price_hourly": size.get("price_hourly")},
            "region": {"slug": region, "name": dict(DEFAULT_REGIONS).get(region, region)},
            "image": {"slug": body["image"]},
            "tags": list(body.get("tags") or []),
            "vpc_uuid": body.get("vpc_uuid"),
            "volume_ids": [],
            "created_at": _now(),
            "networks": {
                "v4": [
                    {"ip_address": self._private_ip(body.get("vpc_uuid"), region), "type": "private"},
                    {"ip_address": f"198.51.{(n >> 8) & 255}.{n & 255}", "type": "public"},
                ]
            },
        }
        self.droplets[n] = droplet
        if body["name"] not in self.faults.never_boot:
            self._booted_at[n] = time.monotonic() + self.boot_s
        if self.on_create is not None:
            self.on_create(droplet, body.get("user_data"))
        return self._view(droplet)

    def vpc_range(self, droplet: Json) -> str:
        """The address range of the droplet's VPC (the region's default one when it names none)."""
        vpc = droplet.get("vpc_uuid")
        return str(self.vpcs[vpc]["ip_range"]) if vpc in self.vpcs else DEFAULT_VPC_RANGE

    def _private_ip(self, vpc_uuid: str | None, region: str) -> str:
        """The next free address of the droplet's VPC (or of the region's default VPC, 10.100.0.0/16)."""
        network = ipaddress.ip_network(self.vpcs[vpc_uuid]["ip_range"] if vpc_uuid else DEFAULT_VPC_RANGE)
        taken = {
            n["ip_address"]
            for d in self.droplets.values()
            for n in d["networks"]["v4"]
            if n["type"] == "private"
        }
        for host in itertools.islice(network.hosts(), 1, None):  # .1 is the gateway's
            if str(host) not in taken:
                return str(host)
        raise invalid(f"no free address left in {network} ({region})")

    def _view(self, droplet: Json) -> Json:
        booted = self._booted_at.get(int(droplet["id"]))
        if droplet["status"] == "new" and booted is not None and time.monotonic() >= booted:
            droplet["status"] = "active"
        return dict(droplet)

    def _droplet(self, ident: str) -> Json | None:
        return self.droplets.get(int(ident)) if ident.isdigit() else None

    def _delete_droplet(self, n: int) -> None:
        droplet = self.droplets.pop(n)
        if self.on_delete is not None:
            self.on_delete(n)
        self._booted_at.pop(n, None)
        for volume in self.volumes.values():
            if n in volume["droplet_ids"]:
                volume["droplet_ids"].remove(n)  # the volume outlives its droplet
        for firewall in self.firewalls.values():
            if n in firewall["droplet_ids"]:
                firewall["droplet_ids"].remove(n)
        droplet["status"] = "archive"

    # -- volumes ---------------------------------------------------------------------------------------------
    def _volumes(
        self, method: str, rest: list[str], q: dict[str, list[str]], body: Json
    ) -> tuple[int, Json | None]:
        if method == "POST" and not rest:
            for key in ("name", "region", "size_gigabytes"):
                if not body.get(key):
                    raise invalid(f"{key} is required")
            if any(
                v["name"] == body["name"] and v["region"]["slug"] == body["region"]
                for v in self.volumes.values()
            ):
                raise ApiError(409, "conflict", "a volume with this name already exists in this region")
            ident = _uuid()
            volume = {
                "id": ident,
                "name": body["name"],
                "region": {"slug": body["region"]},
                "size_gigabytes": int(body["size_gigabytes"]),
                "filesystem_type": body.get("filesystem_type", ""),
                "filesystem_label": body.get("filesystem_label", ""),
                "droplet_ids": [],
                "tags": list(body.get("tags") or []),
                "created_at": _now(),
            }
            self.volumes[ident] = volume
            return 201, {"volume": dict(volume)}
        if method == "GET" and not rest:
            name = _arg(q, "name")
            found = [dict(v) for v in self.volumes.values() if name is None or v["name"] == name]
            return 200, _page(q, "volumes", found)
        return self._volume(method, rest, body)

    def _volume(self, method: str, rest: list[str], body: Json) -> Answer:
        volume = self.volumes.get(rest[0]) if rest else None
        if volume is None:
            raise not_found()
        if method == "GET" and len(rest) == 1:
            return 200, {"volume": dict(volume)}
        if method == "DELETE" and len(rest) == 1:
            if volume["droplet_ids"]:
                raise invalid("Volume is attached to a Droplet; detach it first.")
            del self.volumes[rest[0]]
            return 204, None
        if method == "POST" and rest[1:] == ["actions"]:
            return self._volume_action(volume, body)
        raise not_found()

    def _volume_action(self, volume: Json, body: Json) -> tuple[int, Json]:
        kind, droplet = body.get("type"), self._droplet(str(body.get("droplet_id", "")))
        if kind not in ("attach", "detach"):
            raise invalid("type must be attach or detach")
        if droplet is None:
            raise not_found()
        if droplet["region"]["slug"] != volume["region"]["slug"]:
            raise invalid("Volume and Droplet must be in the same region.")
        n = int(droplet["id"])
        if kind == "attach":
            if volume["droplet_ids"] and n not in volume["droplet_ids"]:
                raise invalid("Volume is already attached to another Droplet.")
            volume["droplet_ids"] = [n]
            droplet["volume_ids"] = sorted({*droplet["volume_ids"], volume["id"]})
            if self.on_attach is not None:
                self.on_attach(n, volume)
        else:
            volume["droplet_ids"] = [i for i in volume["droplet_ids"] if i != n]
            droplet["volume_ids"] = [i for i in droplet["volume_ids"] if i != volume["id"]]
        action = {"id": next(self._ids), "status": "completed", "type": f"{kind}_volume", "resource_id": n}
        return 202, {"action": action}

    # -- firewalls, VPCs, tags -------------------------------------------------------------------------------
    def _firewalls(
        self, method: str, rest: list[str], q: dict[str, list[str]], body: Json
    ) -> tuple[int, Json | None]:
        if method == "POST" and not rest:
            if not body.get("name"):
                raise invalid("name is required")
            ident = _uuid()
            created = {
                "id": ident,
                "name": body["name"],
                "status": "succeeded",
                "inbound_rules": list(body.get("inbound_rules") or []),
                "outbound_rules": list(body.get("outbound_rules") or []),
                "droplet_ids": [int(i) for i in body.get("droplet_ids") or []],
                "tags": list(body.get("tags") or []),
                "created_at": _now(),
            }
            self.firewalls[ident] = created
            return 202, {"firewall": dict(created)}
        if method == "GET" and not rest:
            return 200, _page(q, "firewalls", [dict(f) for f in self.firewalls.values()])
        firewall = self.firewalls.get(rest[0]) if rest else None
        if firewall is None:
            raise not_found()
        if method == "GET" and len(rest) == 1:
            return 200, {"firewall": dict(firewall)}
        if method == "PUT" and len(rest) == 1:
            firewall.update(
                {k: v for k, v in body.items() if k in ("name", "inbound_rules", "outbound_rules", "tags")}
            )
            firewall["droplet_ids"] = [int(i) for i in body.get("droplet_ids") or firewall["droplet_ids"]]
            return 200, {"firewall": dict(firewall)}
        if method == "DELETE" and len(rest) == 1:
            del self.firewalls[rest[0]]
            return 204, None
        if rest[1:] == ["droplets"] and method in ("POST", "DELETE"):
            ids = [int(i) for i in body.get("droplet_ids") or []]
            if any(i not in self.droplets for i in ids):
                raise not_found()
            current = set(firewall["droplet_ids"])
            firewall["droplet_ids"] = sorted(current | set(ids) if method == "POST" else current - set(ids))
            return 204, None
        raise not_found()

    def _vpcs(
        self, method: str, rest: list[str], q: dict[str, list[str]], body: Json
    ) -> tuple[int, Json | None]:
        if method == "POST" and not rest:
            if not body.get("name") or not body.get("region"):
                raise invalid("name and region are required")
            ident = _uuid()
            n = len(self.vpcs) + 10
            made = {
                "id": ident,
                "name": body["name"],
                "region": body["region"],
                "ip_range": body.get("ip_range") or f"10.{n}.0.0/20",
                "description": body.get("description", ""),
                "default": False,
                "created_at": _now(),
            }
            self.vpcs[ident] = made
            return 201, {"vpc": dict(made)}
        if method == "GET" and not rest:
            return 200, _page(q, "vpcs", [dict(v) for v in self.vpcs.values()])
        vpc = self.vpcs.get(rest[0]) if rest else None
        if vpc is None:
            raise not_found()
        if method == "GET":
            return 200, {"vpc": dict(vpc)}
        if method == "DELETE":
            if any(d.get("vpc_uuid") == vpc["id"] for d in self.droplets.values()):
                raise ApiError(409, "conflict", "Can not delete VPC with members")
            del self.vpcs[rest[0]]
            return 204, None
        raise not_found()

    def _tags(
        self, method: str, rest: list[str], q: dict[str, list[str]], body: Json
    ) -> tuple[int, Json | None]:
        if method == "POST" and not rest:
            name = str(body.get("name") or "")
            if not name:
                raise invalid("name is required")
            self.tags.setdefault(name, {"name": name, "resources": {"count": 0}})
            return 201, {"tag": dict(self.tags[name])}
        if method == "GET" and not rest:
            return 200, _page(q, "tags", [dict(t) for t in self.tags.values()])
        if rest and rest[0] in self.tags and method == "DELETE" and len(rest) == 1:
            del self.tags[rest[0]]
            return 204, None
        if rest and rest[1:] == ["resources"] and method == "POST":
            for resource in body.get("resources") or []:
                droplet = self._droplet(str(resource.get("resource_id", "")))
                if droplet is None:
                    raise not_found()
                if rest[0] not in droplet["tags"]:
                    droplet["tags"].append(rest[0])
            self.tags.setdefault(rest[0], {"name": rest[0], "resources": {"count": 0}})
            return 204, None
        raise not_found()


def _arg(q: Query, name: str) -> str | None:
    values = q.get(name)
    return values[0] if values else None


def _page(q: Query, key: str, items: list[Json]) -> Json:
    """One page, as DigitalOcean pages: ``per_page`` (at most 200), ``page`` from 1, ``meta.total``."""
    per_page = max(1, min(int((q.get("per_page") or ["20"])[0]), 200))
    page = max(1, int((q.get("page") or ["1"])[0]))
    return {key: items[(page - 1) * per_page : page * per_page], "links": {}, "meta": {"total": len(items)}}


def _uuid() -> str:
    raw = secrets.token_hex(16)
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Handler(BaseHTTPRequestHandler):
    twin: Twin

    def _serve(self) -> None:
        url = urlparse(self.path)
        request_id = secrets.token_hex(8)
        if self.headers.get("Authorization") != f"Bearer {self.twin.token}":
            return self._send(
                401, {"id": "unauthorized", "message": "Unable to authenticate you."}, request_id
            )
        length = int(self.headers.get("Content-Length") or 0)
        try:
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return self._send(
                400, {"id": "bad_request", "message": "The request body is not JSON."}, request_id
            )
        try:
            status, answer = self.twin.handle(self.command, url.path, parse_qs(url.query), body)
        except ApiError as exc:
            return self._send(exc.status, {"id": exc.ident, "message": exc.message}, request_id, exc.headers)
        except (KeyError, TypeError, ValueError) as exc:
            return self._send(
                422, {"id": "unprocessable_entity", "message": f"invalid request: {exc}"}, request_id
            )
        self._send(status, answer, request_id)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def _send(
        self, status: int, body: Json | None, request_id: str, headers: dict[str, str] | None = None
    ) -> None:
        data = (
            b""
            if body is None
            else json.dumps({**body, **({"request_id": request_id} if status >= 400 else {})}).encode()
        )
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("RateLimit-Limit", "5000")
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read twin.requests
        pass


@contextmanager
def serve_twin(twin: Twin, port: int = 0) -> Iterator[str]:
    """The twin on 127.0.0.1 (``port`` 0: a free one); yields its base URL."""
    handler = type("TwinHandler", (_Handler,), {"twin": twin})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

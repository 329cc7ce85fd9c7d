"""Deployment webhooks: SSRF-checked URLs, signed bodies, a durable outbox delivered at least once.

Two signatures on every delivery attempt:
- X-AINative-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>, exactly what the reference product's
  verify() checks (the body carries the event id and when the event happened, `created`);
- X-AINative-Delivery-Signature: sha256=<hex HMAC-SHA256(secret, "<event id>.<timestamp>." + raw body)>, with
  X-AINative-Event-Id and X-AINative-Timestamp (the attempt's time, new at each retry). A receiver that checks
  it (`verify_delivery`) refuses attempts older than 5 minutes and ids it has already processed: a captured
  delivery cannot be replayed later (its timestamp is signed), and a retry is accepted (fresh timestamp, and
  an id not yet processed).

Events are written to the outbox in the store first, then sent with exponential backoff and jitter until a
2xx (redirects are not followed), for up to a day; a gateway restart loses nothing. One gateway replica sends
at a time (a lease)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import random
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from agentcloud.control.errors import UnsafeURL
from agentcloud.store import Store
from agentcloud.store.keys import new_id
from agentcloud.store.offload import StoreThread
from agentcloud.upstream.http_client import HttpPool

EVENTS = (
    "deployment.active",
    "deployment.degraded",
    "deployment.sla_breach",
    "deployment.recovered",
    "deployment.scaled",
    "deployment.inactive",  # beyond the reference's list: torn down (billing stopped)
)
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
METADATA = ipaddress.ip_address("169.254.169.254")
GIVE_UP_AFTER_S = 24 * 3600


@dataclass(frozen=True)
class Policy:
    """Which webhook URLs are allowed beyond public https ones."""

    allow_http: bool = False  # local development only
    allow_loopback: bool = False  # tests only


def _refuse(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: Policy) -> str | None:
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return _refuse(addr.ipv4_mapped, policy)
        if addr in NAT64:  # 64:ff9b::a.b.c.d reaches a.b.c.d through a NAT64 gateway
            return _refuse(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF), policy)
        if addr.sixtofour is not None:
            return _refuse(addr.sixtofour, policy)
    if addr.is_loopback:
        return None if policy.allow_loopback else "loopback"
    if addr == METADATA:
        return "the metadata service"
    if isinstance(addr, ipaddress.IPv4Address) and addr in CGNAT:
        return "carrier-grade NAT space"
    if addr.is_link_local:
        return "link-local"
    if addr.is_private:
        return "a private network"
    if not addr.is_global or addr.is_multicast or addr.is_reserved or addr.is_unspecified:
        return "not a public address"
    return None


def check_url(url: str, policy: Policy, resolve: Any = socket.getaddrinfo) -> tuple[str, str]:
    """(url, the one address to connect to); raises UnsafeURL naming why. Only printable ASCII: anything
    else is refused here rather than failing later, at every delivery attempt."""
    if not url.isascii() or not url.isprintable() or " " in url:
        raise UnsafeURL("webhook URLs must be printable ASCII (percent-encode other characters)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # an unclosed [ or a port out of range
        raise UnsafeURL(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not policy.allow_http):
        raise UnsafeURL("webhook URLs must be https")
    if not parts.hostname or parts.username or parts.password:
        raise UnsafeURL("webhook URLs need a host and no credentials")
    try:
        infos = resolve(
            parts.hostname, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except OSError:
        raise UnsafeURL(f"cannot resolve {parts.hostname}") from None
    addresses = sorted({info[4][0] for info in infos})
    if not addresses:
        raise UnsafeURL(f"{parts.hostname} has no address")
    for text in addresses:  # every address must be safe: DNS may hand out any of them
        why = _refuse(ipaddress.ip_address(text.split("%")[0]), policy)
        if why:
            raise UnsafeURL(f"{parts.hostname} resolves to {text}, {why}")
    return url, addresses[0]


REPLAY_WINDOW_S = 300


def sign(secret: str, body: bytes) -> str:
    """The reference product's signature: of the body alone."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_delivery(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The signature of one delivery attempt: its event id and time together with the body."""
    message = f"{event_id}.{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_delivery(
    secret: str,
    body: bytes,
    headers: dict[str, str],
    seen: set[str],
    now: float | None = None,
    window_s: float = REPLAY_WINDOW_S,
) -> bool:
    """What a receiver does (docs/lifecycle.md): check the attempt's signature, refuse an attempt older (or
    newer) than the window, and an event id already processed; remember the id once accepted."""
    try:
        event_id = headers["X-AINative-Event-Id"]
        timestamp = int(headers["X-AINative-Timestamp"])
        signature = headers["X-AINative-Delivery-Signature"]
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    expected = sign_delivery(secret, event_id, timestamp, body)
    if not hmac.compare_digest(expected, signature) or abs(now - timestamp) > window_s or event_id in seen:
        return False
    seen.add(event_id)
    return True


def _box_key(pepper: bytes) -> bytes:
    return hashlib.sha256(b"agentcloud webhook secrets\0" + pepper).digest()


def seal(pepper: bytes, secret: str) -> str:
    """Endpoint secrets are stored encrypted (AES-GCM, a key derived from the gateway's pepper)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(12)
    return base64.b64encode(nonce + AESGCM(_box_key(pepper)).encrypt(nonce, secret.encode(), None)).decode()


def unseal(pepper: bytes, sealed: str) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = base64.b64decode(sealed)
    return AESGCM(_box_key(pepper)).decrypt(raw[:12], raw[12:], None).decode()


def backoff_s(attempts: int, base_s: float) -> float:
    return float(min(base_s * 2**attempts, 3600.0) * random.uniform(0.5, 1.0))


class WebhookSender:
    """Writes events to the outbox (`emit`); delivers what is due (`send_due`, one process at a time)."""

    def __init__(
        self,
        store: Store,
        db: StoreThread,
        pepper: bytes,
        policy: Policy,
        base_backoff_s: float = 5.0,
        tick_s: float = 1.0,
        timeout_s: float = 15.0,
    ) -> None:
        self.store, self.db, self.pepper = store, db, pepper
        self.pool: HttpPool | None = None  # set when the control plane starts
        self.policy = policy
        self.base_backoff_s = base_backoff_s
        self.tick_s = tick_s
        self.timeout_s = timeout_s
        self.holder = secrets.token_hex(8)

    async def emit(self, deployment_id: str, event: str, data: dict[str, Any]) -> list[str]:
        """Write one signed body per subscribed webhook to the outbox; returns the event ids."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event}")
        hooks = await self.db(self.store.webhooks_for, deployment_id, event)
        now = time.time()
        rows, ids = [], []
        for hook_id, _, _ in hooks:
            event_id = new_id("evt")
            body = orjson.dumps(
                {
                    "id": event_id,
                    "type": event,
                    "created": int(now),
                    "deployment_id": deployment_id,
                    "data": data,
                }
            ).decode()
            rows.append((new_id("out"), hook_id, event_id, body))
            ids.append(event_id)
        if rows:
            await self.db(self.store.enqueue, rows, now)
        return ids

    async def send_due(self) -> int:
        sent = 0
        for outbox_id, hook_id, event_id, body, attempts, created in await self.db(
            self.store.due, time.time()
        ):
            hook = await self.db(self.store.webhook, hook_id)
            if hook is None:
                await self.db(self.store.retry_later, outbox_id, time.time(), "webhook deleted", True)
                continue
            url, sealed = hook
            try:
                error = await self._post(url, unseal(self.pepper, sealed), event_id, body.encode())
            except Exception as exc:  # one webhook that cannot be sent fails alone, never the batch
                error = f"cannot send: {type(exc).__name__}: {exc}"[:300]
            now = time.time()
            if error is None:
                await self.db(self.store.delivered, outbox_id, now)
                sent += 1
            else:
                dead = now - created > GIVE_UP_AFTER_S
                await self.db(
                    self.store.retry_later,
                    outbox_id,
                    now + backoff_s(attempts, self.base_backoff_s),
                    error,
                    dead,
                )
        return sent

    async def _post(self, url: str, secret: str, event_id: str, body: bytes) -> str | None:
        pool = self.pool
        assert pool is not None, "control plane not started"
        try:
            _, address = await asyncio.to_thread(check_url, url, self.policy)  # checked again at each attempt
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "X-AINative-Signature": sign(secret, body),
                "X-AINative-Delivery-Signature": sign_delivery(secret, event_id, timestamp, body),
                "X-AINative-Event-Id": event_id,
                "X-AINative-Timestamp": str(timestamp),
                "User-Agent": "agentcloud-webhooks",
            }
            async with asyncio.timeout(self.timeout_s):
                response = await pool.request(url, body, headers, address=address)
                await response.read()
                response.release()
        except UnsafeURL as exc:
            return f"refused: {exc}"
        except (OSError, TimeoutError) as exc:
            return f"{type(exc).__name__}"
        return None if 200 <= response.status < 300 else f"HTTP {response.status}"

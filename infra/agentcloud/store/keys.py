"""API keys: ``ak_live_<32 random base62><6 checksum>``. Shown once; only an HMAC-SHA256 with a server-side
pepper is stored. The checksum rejects typos and random strings without touching the store."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from dataclasses import dataclass, field

ALPHABET = string.ascii_letters + string.digits
PREFIX = "ak_live_"
BODY_CHARS = 32
CHECK_CHARS = 6
DISPLAY_CHARS = len(PREFIX) + 6


def _checksum(body: str) -> str:
    digest = int.from_bytes(hashlib.sha256(body.encode()).digest()[:8], "big")
    out = []
    for _ in range(CHECK_CHARS):
        digest, rem = divmod(digest, len(ALPHABET))
        out.append(ALPHABET[rem])
    return "".join(out)


def generate() -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_CHARS))
    return f"{PREFIX}{body}{_checksum(body)}"


def well_formed(token: str) -> bool:
    if not token.startswith(PREFIX) or len(token) != len(PREFIX) + BODY_CHARS + CHECK_CHARS:
        return False
    body, check = token[len(PREFIX) : -CHECK_CHARS], token[-CHECK_CHARS:]
    return hmac.compare_digest(_checksum(body), check)


def digest(pepper: bytes, token: str) -> str:
    return hmac.new(pepper, token.encode(), hashlib.sha256).hexdigest()


def display_prefix(token: str) -> str:
    return token[:DISPLAY_CHARS]


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(6)}"


KINDS = ("admin", "standard", "scoped")


@dataclass(frozen=True)
class KeyRecord:
    """What a request's key may do. ``kind``: admin (manages its org), standard (invokes everything its plan
    and org allow), scoped (invokes only deployments it was granted)."""

    id: str
    org_id: str
    name: str
    prefix: str
    plan: str
    kind: str
    created_at: float
    revoked_at: float | None = None
    expires_at: float | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    grants: frozenset[str] = field(default_factory=frozenset)
    memberships: tuple[tuple[str, frozenset[str]], ...] = ()

    def active(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def org_permissions(self, org_id: str) -> frozenset[str]:
        """Permissions in ``org_id``: a key's own org grants by kind; other orgs by explicit membership."""
        if org_id == self.org_id and self.kind != "scoped":
            base = {"deployment:invoke", "model:invoke"}
            if self.kind == "admin":
                base |= {"deployment:manage", "deployment:read"}
            return frozenset(base)
        for org, perms in self.memberships:
            if org == org_id:
                return perms
        return frozenset()

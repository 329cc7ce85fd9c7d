"""Rate limits (requests/min and tokens/min per key) and per-deployment concurrency.

Both rates use GCRA: a key's state is one "theoretical arrival time" (TAT) per rate. A request of cost c is
allowed when ``TAT + c*T - period <= now`` (T = period / limit), which admits up to `limit` at once and then
refills smoothly. Tokens are reserved from an estimate before the upstream call and settled with the real
usage after it (a refund moves TAT back). The check of both rates is atomic: in-process under the event loop,
in Redis as one Lua script using Redis' clock, so several gateway processes share exactly one limit."""

from __future__ import annotations

import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from agentcloud.gateway.errors import GatewayError

T = TypeVar("T")

PERIOD_S = 60.0
MAX_KEYS = 100_000
RETRY_AFTER_S = 2  # asked of clients while the shared limit store is down


class SharedStateError(GatewayError):
    """The shared limit store (Redis) cannot be reached: the request is refused with 503 and Retry-After,
    never let through unlimited (fail closed) and never left hanging (the client has short timeouts)."""

    def __init__(self, what: str, exc: BaseException) -> None:
        super().__init__(
            503,
            f"the gateway's shared rate-limit store is unavailable ({what}: {type(exc).__name__}); "
            f"retry after {RETRY_AFTER_S} seconds",
            "api_error",
            code="limits_unavailable",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


async def _shared(what: str, call: Awaitable[T]) -> T:
    """Await a Redis call; its failures (refused, timed out, reset) become a SharedStateError."""
    import redis.exceptions

    try:
        return await call
    except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
        raise SharedStateError(what, exc) from None


@dataclass(frozen=True)
class Decision:
    """The outcome of a rate check, with the headers that say so."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(math.ceil(self.reset_s)).encode()),
        ]
        if not self.allowed:
            out.append((b"retry-after", str(max(1, math.ceil(self.retry_after_s))).encode()))
        return out


class RateLimiter(Protocol):
    """Requests/min and tokens/min per key (GCRA), in memory or in Redis."""

    async def check(self, key: str, rpm: int | None, tpm: int | None, tokens: int) -> Decision | None: ...

    async def settle(self, key: str, tpm: int | None, delta_tokens: int) -> None: ...


def _gcra(tat: float, now: float, limit: int, cost: float) -> tuple[bool, float, int, float, float]:
    """(allowed, new_tat, remaining, reset_s, retry_after_s) for one rate."""
    interval = PERIOD_S / limit
    tat = max(tat, now)
    new_tat = tat + cost * interval
    allow_at = new_tat - PERIOD_S
    if allow_at > now:
        return False, tat, 0, tat - now, allow_at - now
    remaining = int((PERIOD_S - (new_tat - now)) / interval)
    return True, new_tat, max(0, remaining), new_tat - now, 0.0


class MemoryRateLimiter:
    """Exact within one process (the event loop serializes checks); bounded to MAX_KEYS keys."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tat: OrderedDict[str, float] = OrderedDict()

    def _get(self, key: str) -> float:
        return self._tat.get(key, 0.0)

    def _set(self, key: str, value: float) -> None:
        self._tat[key] = value
        self._tat.move_to_end(key)
        while len(self._tat) > MAX_KEYS:
            self._tat.popitem(last=False)

    async def check(self, key: str, rpm: int | None, tpm: int | None, tokens: int) -> Decision | None:
        if rpm is None and tpm is None:
            return None
        now = self.clock()
        req = _gcra(self._get(f"r:{key}"), now, rpm, 1) if rpm else None
        tok = _gcra(self._get(f"t:{key}"), now, tpm, min(tokens, tpm)) if tpm else None
        allowed = (req is None or req[0]) and (tok is None or tok[0])
        if allowed:
            if req:
                self._set(f"r:{key}", req[1])
            if tok:
                self._set(f"t:{key}", tok[1])
        return _decision(allowed, rpm, tpm, req, tok)

    async def settle(self, key: str, tpm: int | None, delta_tokens: int) -> None:
        self.settle_now(key, tpm, delta_tokens)

    def settle_now(self, key: str, tpm: int | None, delta_tokens: int) -> None:
        if tpm and delta_tokens:
            k = f"t:{key}"
            self._set(k, max(self.clock(), self._get(k)) + delta_tokens * PERIOD_S / tpm)

    def active_keys(self) -> int:
        now = self.clock()
        return sum(1 for tat in self._tat.values() if tat > now)


def _decision(
    allowed: bool,
    rpm: int | None,
    tpm: int | None,
    req: tuple[bool, float, int, float, float] | None,
    tok: tuple[bool, float, int, float, float] | None,
) -> Decision:
    # Headers describe the request rate when there is one (what clients count), else the token rate.
    main, limit = (req, rpm) if req is not None else (tok, tpm)
    assert main is not None and limit is not None
    retry = max(r[4] for r in (req, tok) if r is not None)
    return Decision(allowed, limit, main[2] if allowed else 0, main[3], retry)


# KEYS: request-rate key, token-rate key. ARGV: rpm (0 = none), tpm (0 = none), tokens, period.
_CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local period = tonumber(ARGV[4])
local function gcra(key, limit, cost)
  local interval = period / limit
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - period
  if allow_at > now then return {0, tat, 0, tat - now, allow_at - now} end
  return {1, new_tat, math.floor((period - (new_tat - now)) / interval), new_tat - now, 0}
end
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local req, tok = nil, nil
if rpm > 0 then req = gcra(KEYS[1], rpm, 1) end
if tpm > 0 then tok = gcra(KEYS[2], tpm, math.min(tonumber(ARGV[3]), tpm)) end
local ok = (req == nil or req[1] == 1) and (tok == nil or tok[1] == 1)
if ok then
  if req then redis.call('SET', KEYS[1], tostring(req[2]), 'PX', math.ceil(period * 2000)) end
  if tok then redis.call('SET', KEYS[2], tostring(tok[2]), 'PX', math.ceil(period * 2000)) end
end
local function pack(r)
  if r == nil then return {-1, 0, 0, 0} end
  return {r[1], r[3], tostring(r[4]), tostring(r[5])}
end
local a, b = pack(req), pack(tok)
return {ok and 1 or 0, a[1], a[2], a[3], a[4], b[1], b[2], b[3], b[4]}
"""

# KEYS: token-rate key. ARGV: tpm, delta tokens, period.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
tat = tat + tonumber(ARGV[2]) * tonumber(ARGV[3]) / tonumber(ARGV[1])
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tonumber(ARGV[3]) * 2000))
return 1
"""


class RedisRateLimiter:
    """The same GCRA in one Lua script per check: exact across every gateway process sharing the Redis."""

    def __init__(self, redis: Any, prefix: str = "agentcloud:rl") -> None:
        self.redis = redis
        self.prefix = prefix
        self._check = redis.register_script(_CHECK)
        self._settle = redis.register_script(_SETTLE)

    async def check(self, key: str, rpm: int | None, tpm: int | None, tokens: int) -> Decision | None:
        if rpm is None and tpm is None:
            return None
        r = await _shared(
            "rate check",
            self._check(
                keys=[f"{self.prefix}:r:{key}", f"{self.prefix}:t:{key}"],
                args=[rpm or 0, tpm or 0, tokens, PERIOD_S],
            ),
        )
        req = None if int(r[1]) < 0 else (bool(int(r[1])), 0.0, int(r[2]), float(r[3]), float(r[4]))
        tok = None if int(r[5]) < 0 else (bool(int(r[5])), 0.0, int(r[6]), float(r[7]), float(r[8]))
        return _decision(bool(int(r[0])), rpm, tpm, req, tok)

    async def settle(self, key: str, tpm: int | None, delta_tokens: int) -> None:
        if tpm and delta_tokens:
            await _shared(
                "token settle",
                self._settle(keys=[f"{self.prefix}:t:{key}"], args=[tpm, delta_tokens, PERIOD_S]),
            )


class ConcurrencyLimiter(Protocol):
    """In-flight requests per deployment, bounded by its SLA's concurrency limit."""

    async def acquire(self, name: str, limit: int) -> str | None: ...

    async def release(self, name: str, token: str) -> None: ...

    async def in_flight(self, name: str) -> int: ...


class MemoryConcurrency:
    """Concurrency slots in this process."""

    def __init__(self) -> None:
        self._active: dict[str, set[str]] = {}

    async def acquire(self, name: str, limit: int) -> str | None:
        active = self._active.setdefault(name, set())
        if len(active) >= limit:
            return None
        token = uuid.uuid4().hex
        active.add(token)
        return token

    async def release(self, name: str, token: str) -> None:
        active = self._active.get(name)
        if active is not None:
            active.discard(token)
            if not active:
                del self._active[name]

    async def in_flight(self, name: str) -> int:
        return len(self._active.get(name, ()))


# A sorted set per deployment: member = request token, score = expiry. Expired entries (a crashed gateway) go.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
return 1
"""


class RedisConcurrency:
    """Concurrency slots shared by every gateway process (a sorted set per deployment)."""

    def __init__(self, redis: Any, prefix: str = "agentcloud:cc", max_request_s: float = 900.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.max_request_s = max_request_s
        self._acquire = redis.register_script(_ACQUIRE)

    async def acquire(self, name: str, limit: int) -> str | None:
        token = uuid.uuid4().hex
        ok = await _shared(
            "concurrency",
            self._acquire(keys=[f"{self.prefix}:{name}"], args=[limit, token, self.max_request_s]),
        )
        return token if int(ok) else None

    async def release(self, name: str, token: str) -> None:
        await _shared("concurrency release", self.redis.zrem(f"{self.prefix}:{name}", token))

    async def in_flight(self, name: str) -> int:
        now = time.time()
        return int(await _shared("concurrency", self.redis.zcount(f"{self.prefix}:{name}", now, "+inf")))

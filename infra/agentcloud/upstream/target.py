"""Upstream targets and the circuit breaker kept per upstream."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from agentcloud.catalog import ApiFormat


@dataclass(frozen=True)
class Target:
    """One upstream a request may go to: where, in which format, as which model, with which key and price."""

    name: str
    base_url: str  # ends with /v1 for OpenAI-format upstreams
    format: ApiFormat
    upstream_model: str
    api_key: str | None
    usd_per_mtok_in: float = 0.0
    usd_per_mtok_out: float = 0.0
    deployment_id: str | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.usd_per_mtok_in + completion_tokens * self.usd_per_mtok_out) / 1e6


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after a cooldown (doubling up to ``max_cooldown_s``)
    one probe request is let through, and its outcome closes or re-opens the breaker."""

    def __init__(
        self,
        threshold: int = 5,
        cooldown_s: float = 2.0,
        max_cooldown_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold, self.base_cooldown_s, self.max_cooldown_s, self.clock = (
            threshold,
            cooldown_s,
            max_cooldown_s,
            clock,
        )
        self.failures = 0
        self.open_until = 0.0
        self.cooldown_s = cooldown_s
        self.probing = False

    def allow(self) -> bool:
        if self.failures < self.threshold:
            return True
        if self.clock() >= self.open_until and not self.probing:
            self.probing = True  # half-open: one probe
            return True
        return False

    def success(self) -> None:
        self.failures, self.probing, self.cooldown_s = 0, False, self.base_cooldown_s

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            if self.probing:
                self.cooldown_s = min(self.cooldown_s * 2, self.max_cooldown_s)
            self.open_until = self.clock() + self.cooldown_s
            self.probing = False

    @property
    def state(self) -> str:
        if self.failures < self.threshold:
            return "closed"
        return "half-open" if self.clock() >= self.open_until else "open"


class Breakers:
    """One circuit breaker per upstream base URL, shared by every model and deployment that uses it."""

    def __init__(self) -> None:
        self.by_url: dict[str, CircuitBreaker] = {}

    def __call__(self, target: Target) -> CircuitBreaker:
        b = self.by_url.get(target.base_url)
        if b is None:
            b = self.by_url[target.base_url] = CircuitBreaker()
        return b

"""Where a request may go: for each model an ordered list of targets (serverless providers from presets.yaml,
dedicated deployments from the routes file the deployment stacks produce), and a circuit breaker per upstream."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.catalog import ApiFormat, Catalog


@dataclass(frozen=True)
class Target:
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


@dataclass(frozen=True)
class SshHost:
    """A droplet the gateway may SSH into (model delivery), with the host key pinned for it."""

    host: str
    host_public_key: str
    port: int = 22
    username: str = "root"


@dataclass(frozen=True)
class Deployment:
    id: str
    org_id: str
    name: str
    model_id: str
    targets: tuple[Target, ...]
    concurrency_limit: int | None = None
    status: str = "active"
    gpu_type: str | None = None
    preset: str | None = None
    hosts: tuple[SshHost, ...] = ()


class RoutesError(Exception):
    pass


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


@dataclass
class RouteTable:
    models: dict[str, list[Target]] = field(default_factory=dict)
    deployments: dict[str, Deployment] = field(default_factory=dict)
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)

    def breaker(self, target: Target) -> CircuitBreaker:
        b = self.breakers.get(target.base_url)
        if b is None:
            b = self.breakers[target.base_url] = CircuitBreaker()
        return b

    def add_deployment(self, dep: Deployment) -> None:
        self.deployments[dep.id] = dep


def _env_key(name: str | None) -> str | None:
    return os.environ.get(name) if name else None


def from_catalog(catalog: Catalog) -> RouteTable:
    table = RouteTable()
    for model_id in catalog.models:
        table.models[model_id] = [
            Target(
                name=pname,
                base_url=p.base_url.rstrip("/"),
                format=p.format,
                upstream_model=pm.upstream,
                api_key=_env_key(p.api_key_env),
                usd_per_mtok_in=pm.usd_per_mtok_in,
                usd_per_mtok_out=pm.usd_per_mtok_out,
            )
            for pname, p in catalog.providers_for(model_id)
            for pm in [p.models[model_id]]
        ]
    return table


def _target_from(entry: dict[str, Any], model_id: str, name: str, deployment_id: str | None = None) -> Target:
    base_url = str(entry["base_url"]).rstrip("/")
    key = entry.get("api_key") or _env_key(entry.get("api_key_env"))
    return Target(
        name=name,
        base_url=base_url,
        format=ApiFormat(entry.get("format", "openai")),
        upstream_model=str(entry.get("upstream_model", model_id)),
        api_key=key,
        usd_per_mtok_in=float(entry.get("usd_per_mtok_in", 0.0)),
        usd_per_mtok_out=float(entry.get("usd_per_mtok_out", 0.0)),
        deployment_id=deployment_id,
    )


def deployment_from(entry: dict[str, Any]) -> Deployment:
    dep_id = str(entry["id"])
    model_id = str(entry["model_id"])
    endpoints = entry.get("endpoints") or []
    targets = tuple(
        _target_from({**entry, "base_url": url}, model_id, f"{dep_id}#{i}", deployment_id=dep_id)
        for i, url in enumerate(endpoints)
    )
    limit = entry.get("concurrency_limit")
    hosts = tuple(
        SshHost(
            str(h["host"]), str(h["host_public_key"]), int(h.get("port", 22)), str(h.get("username", "root"))
        )
        for h in entry.get("hosts") or []
    )
    return Deployment(
        id=dep_id,
        org_id=str(entry["org_id"]),
        name=str(entry.get("name", dep_id)),
        model_id=model_id,
        targets=targets,
        concurrency_limit=int(limit) if limit else None,
        status=str(entry.get("status", "active")),
        gpu_type=entry.get("gpu_type"),
        preset=entry.get("preset"),
        hosts=hosts,
    )


def load_routes(table: RouteTable, path: Path) -> RouteTable:
    """Add the routes file: ``deployments`` (dedicated, per org) and ``models`` (extra OpenAI-compatible
    upstreams, tried before the providers, e.g. a local llama.cpp for development)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RoutesError(f"{path}: cannot read routes: {exc}") from None
    try:
        for entry in data.get("models", []):
            model_id = str(entry["model_id"])
            target = _target_from(entry, model_id, entry.get("name", f"route:{model_id}"))
            table.models[model_id] = [target, *table.models.get(model_id, [])]
        for entry in data.get("deployments", []):
            table.add_deployment(deployment_from(entry))
    except (KeyError, TypeError, ValueError) as exc:
        raise RoutesError(f"{path}: malformed route entry: {exc!r}") from None
    return table

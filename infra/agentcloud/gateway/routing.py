"""Where a request may go: for each model an ordered list of targets (a routes file's upstreams, then
serverless providers from presets.yaml), and the dedicated deployments (from the store, kept in sync by
`RouteSync`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentcloud.catalog import ApiFormat, Catalog, Routing
from agentcloud.gateway.errors import RoutesError
from agentcloud.records import DeploymentRecord, Status
from agentcloud.upstream.balance import Balancer, affinity_key
from agentcloud.upstream.target import Breakers, Target


@dataclass(frozen=True)
class SshHost:
    """A droplet the gateway may SSH into (model delivery), with the host key pinned for it."""

    host: str
    host_public_key: str
    port: int = 22
    username: str = "root"


@dataclass(frozen=True)
class Deployment:
    """A dedicated deployment as the data plane serves it: its owner, model, status and engines."""

    id: str
    org_id: str
    name: str
    model_id: str
    targets: tuple[Target, ...]
    concurrency_limit: int | None = None
    status: Status = Status.ACTIVE
    gpu_type: str | None = None
    preset: str | None = None
    hosts: tuple[SshHost, ...] = ()
    wakeable: bool = False  # scaled to zero by the autoscaler: a request wakes it
    routing: Routing = Routing.PREFIX_AWARE  # how requests spread over its replicas
    engine: str | None = None  # vllm or llamacpp (from the plan); None when registered by hand


@dataclass
class RouteTable:
    """Models to their targets in fallback order, deployments by id, and the breakers of every upstream.

    Deployments from a routes file are static (``static``); the rest mirror the store."""

    models: dict[str, list[Target]] = field(default_factory=dict)
    deployments: dict[str, Deployment] = field(default_factory=dict)
    breakers: Breakers = field(default_factory=Breakers)
    static: set[str] = field(default_factory=set)
    unconfigured: dict[str, list[str]] = field(default_factory=dict)  # model -> provider key settings missing
    # routed models whose first n targets are replicas of one server (spread), not fallbacks (tried in order)
    policies: dict[str, tuple[Routing, int]] = field(default_factory=dict)

    def spread(
        self,
        balancer: Balancer,
        model_id: str,
        targets: list[Target],
        dep: Deployment | None,
        messages: object = None,
        system: object = None,
    ) -> tuple[list[Target], bytes | None]:
        """The order to try the targets in (replicas by their policy, then fallbacks as listed), and the
        affinity key that holds a request for its turn at home (``prefix_aware`` only). The key is read from
        ``messages``/``system`` only when the policy uses it."""
        if dep is not None:
            routing, n = dep.routing, len(targets)
        elif model_id in self.policies:
            routing, n = self.policies[model_id]
        else:
            return targets, None
        affinity = affinity_key(messages, system) if routing is Routing.PREFIX_AWARE else None
        # vLLM shares a computed prefix between running requests: only engines whose slots do not (llama.cpp)
        # gain from holding a request of the same key until its turn
        held = affinity if routing is Routing.PREFIX_AWARE and (dep is None or dep.engine != "vllm") else None
        return balancer.order(targets[:n], routing, affinity) + targets[n:], held

    def add_deployment(self, dep: Deployment) -> None:
        self.deployments[dep.id] = dep

    def replace_deployments(self, records: list[DeploymentRecord]) -> None:
        """The store's deployments (plus the static ones) become the table's, in one assignment."""
        fresh = {d: self.deployments[d] for d in self.static if d in self.deployments}
        fresh.update({r.id: deployment_from_record(r) for r in records})
        self.deployments = fresh


def _env_key(name: str | None) -> str | None:
    return os.environ.get(name) if name else None


def from_catalog(catalog: Catalog) -> RouteTable:
    """The providers of every catalog model, in routing order; a provider whose API key is not configured is
    left out (a prompt never goes out unauthenticated), and ``unconfigured`` names the settings a model lacks.
    """
    table = RouteTable()
    for model_id in catalog.models:
        for _, p in catalog.providers_for(model_id):
            if p.api_key_env and not _env_key(p.api_key_env):
                table.unconfigured.setdefault(model_id, []).append(p.api_key_env)
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
            if not p.api_key_env or _env_key(p.api_key_env)
            for pm in [p.models[model_id]]
        ]
        if not table.models[model_id]:
            del table.models[model_id]
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
        status=Status(entry.get("status", "active")),
        gpu_type=entry.get("gpu_type"),
        preset=entry.get("preset"),
        hosts=hosts,
        wakeable=bool(entry.get("wakeable")),
        routing=Routing(entry.get("routing") or Routing.PREFIX_AWARE),
        engine=entry.get("engine"),
    )


def deployment_from_record(record: DeploymentRecord) -> Deployment:
    routes = record.routes
    return deployment_from(
        {
            **routes,
            "id": record.id,
            "org_id": record.org_id,
            "name": record.name,
            "model_id": record.served_model,
            "status": record.status.value,
        }
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
            name = entry.get("name", f"route:{model_id}")
            urls = entry.get("endpoints") or [entry["base_url"]]
            if not isinstance(urls, list) or not urls:
                raise ValueError(f"{model_id}: endpoints must be a non-empty list of base URLs")
            targets = [
                _target_from({**entry, "base_url": url}, model_id, name if len(urls) == 1 else f"{name}#{i}")
                for i, url in enumerate(urls)
            ]
            if len(targets) > 1 or entry.get("routing"):  # replicas of one model: spread, not fall back
                table.policies[model_id] = (
                    Routing(entry.get("routing") or Routing.PREFIX_AWARE),
                    len(targets),
                )
            table.models[model_id] = [*targets, *table.models.get(model_id, [])]
        for entry in data.get("deployments", []):
            dep = deployment_from(entry)
            table.add_deployment(dep)
            table.static.add(dep.id)
    except (KeyError, TypeError, ValueError) as exc:
        raise RoutesError(f"{path}: malformed route entry: {exc!r}") from None
    return table

"""Stack files: ``stacks/Pulumi.<stack>.yaml`` with one deployment under ``agent-cloud:deployment``.

The deployment object carries the reference product's create-deployment fields (name, model_id, gpu_type,
region, replicas, preset) plus scaling, sla, ssh and network blocks. Parsing validates types here and names
against the catalog, reporting every problem with file:line, key path, allowed values and a fix.
"""

from __future__ import annotations

import difflib
import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from agentcloud import PULUMI_PROJECT
from agentcloud.catalog import Catalog, Precision, Routing
from agentcloud.document import Document, KeyPath, load_document
from agentcloud.errors import Problem, SpecError
from agentcloud.schema import Strict, validate

DEPLOYMENT_KEY = f"{PULUMI_PROJECT}:deployment"
MAX_REPLICAS = 16
# Config keys in our namespace besides the deployment (all optional; the secrets are set with --secret).
PLACEMENT_KEY = f"{PULUMI_PROJECT}:placement"
"""Which of a deployment's alternatives the stack runs (0: as declared; i: its i-th fallback). Set by the
stack operations when DigitalOcean has no capacity for the ones before; not written in stack files by hand."""

KNOWN_PROJECT_KEYS = {
    DEPLOYMENT_KEY,
    f"{PULUMI_PROJECT}:gateway",
    f"{PULUMI_PROJECT}:hfToken",
    f"{PULUMI_PROJECT}:engineApiKey",
    f"{PULUMI_PROJECT}:keepModelCache",
    PLACEMENT_KEY,
}

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")]
Replicas = Annotated[int, Field(ge=0, le=MAX_REPLICAS)]


class Scaling(Strict):
    """Autoscaling bounds and signals of a deployment."""

    min_replicas: Replicas = 1
    max_replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 1
    scale_to_zero: bool = False
    idle_timeout_seconds: Annotated[int, Field(ge=60, le=86400)] = 300
    target_in_flight_per_replica: Annotated[int, Field(ge=1, le=4096)] = 32

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas}); "
                "fix: lower min_replicas or raise max_replicas"
            )
        if self.min_replicas == 0 and not self.scale_to_zero:
            raise ValueError("min_replicas 0 needs scale_to_zero: true; fix: set one of them")
        return self


class Sla(Strict):
    """A deployment's SLA targets."""

    ttft_target_ms: Annotated[int, Field(gt=0, le=600_000)] | None = None
    throughput_target_tps: Annotated[float, Field(gt=0)] | None = None
    concurrency_limit: Annotated[int, Field(ge=1, le=100_000)] | None = None


def _network(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"not an IP network: {value!r}; fix: write it as CIDR, e.g. 203.0.113.0/24"
        ) from None
    if net.prefixlen == 0:
        raise ValueError(
            f"{value} opens the port to the whole internet; fix: list your office or VPN ranges instead"
        )
    return str(net)


class Ssh(Strict):
    """Who may SSH to the droplets, with which keys."""

    allowed_cidrs: tuple[str, ...] = ()
    keys: tuple[str, ...] = Field(default=(), description="DigitalOcean SSH key ids or fingerprints")

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_network(v) for v in value)


class Network(Strict):
    """The VPC a deployment joins, or the range of the one it creates."""

    vpc_uuid: str | None = Field(
        default=None, description="join this VPC (the gateway's); else one is created"
    )
    gateway_tag: Annotated[str, Field(pattern=r"^[a-z0-9:_-]{1,255}$")] = "agentcloud-gateway"
    gateway_cidrs: tuple[str, ...] = ()
    engine_port: Annotated[int, Field(ge=1024, le=65535)] = 8000

    @field_validator("gateway_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_network(v) for v in value)


class Backend(StrEnum):
    """Where a deployment runs: GPU droplets this project manages, or DigitalOcean's managed Dedicated
    Inference (the same model and accelerator, DigitalOcean's engine)."""

    DROPLETS = "droplets"
    DEDICATED_INFERENCE = "dedicated-inference"


class Placement(Strict):
    """A fallback: where (and on what) to deploy when the declared choice has no capacity. Each key it sets
    replaces the deployment's; what it leaves out stays as declared."""

    region: str | None = None
    gpu_type: str | None = None
    precision: Precision | None = None
    preset: str | None = None

    def describe(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self.model_dump(exclude_none=True, mode="json").items())


class DeploymentSpec(Strict):
    """A deployment as a stack file declares it (validated against the catalog)."""

    name: Name
    model_id: str
    region: str
    preset: str = "balanced"
    gpu_type: str | None = Field(default=None, description="defaults to the preset's gpu type")
    replicas: Replicas = 1
    scaling: Scaling | None = None
    sla: Sla | None = None
    ssh: Ssh = Ssh()
    network: Network = Network()
    precision: Precision | None = Field(default=None, description="override the preset's weight precision")
    max_model_len: Annotated[int, Field(ge=512)] | None = None
    cache_disk_gib: Annotated[int, Field(ge=10, le=16384)] | None = None
    routing: Routing = Field(
        default=Routing.PREFIX_AWARE, description="how requests spread over the replicas"
    )
    backend: Backend = Field(default=Backend.DROPLETS, description="droplets, or dedicated-inference")
    spot: bool = Field(
        default=False,
        description="spot droplets where offered; on-demand when they are reclaimed or unavailable",
    )
    fallbacks: tuple[Placement, ...] = Field(
        default=(), max_length=8, description="where to go, in order, when DigitalOcean has no capacity"
    )

    def alternatives(self) -> list[DeploymentSpec]:
        """The declared placement, then each fallback applied to it, in the user's order."""
        out = [self]
        if self.spot:  # spot first; the same placement on demand when spot is reclaimed or unavailable
            out.append(self.model_copy(update={"spot": False, "fallbacks": ()}))
        for fallback in self.fallbacks:
            changes = fallback.model_dump(exclude_none=True)
            out.append(self.model_copy(update={**changes, "fallbacks": (), "spot": False}))
        return out

    def placement(self) -> str:
        """Where this (alternative) lands, for people: region, gpu type, precision."""
        gpu = self.gpu_type or f"the {self.preset} preset's gpu"
        where = f"{self.region} on {gpu}" + (f" in {self.precision.value}" if self.precision else "")
        return where + (" (spot)" if self.spot else "")

    @model_validator(mode="after")
    def _replicas_within_scaling(self) -> DeploymentSpec:
        s = self.scaling
        if s is not None and not (s.min_replicas <= self.replicas <= s.max_replicas):
            raise ValueError(
                f"replicas ({self.replicas}) is outside scaling min_replicas..max_replicas "
                f"({s.min_replicas}..{s.max_replicas}); fix: change replicas or the scaling bounds"
            )
        return self


def _suggest(value: str, options: list[str]) -> str:
    close = difflib.get_close_matches(value, options, n=1)
    return f"did you mean '{close[0]}'?" if close else f"use one of: {', '.join(options)}"


def check_against_catalog(
    spec: DeploymentSpec, catalog: Catalog, doc: Document, base: KeyPath
) -> list[Problem]:
    """Names that must exist in presets.yaml, and the gpu type offered in the region."""
    problems: list[Problem] = []

    def unknown(key: str, what: str, value: str, options: list[str]) -> None:
        problems.append(_unknown_name(doc, base, key, what, value, options))

    deployable = [m for m, model in catalog.models.items() if model.deployable]
    if spec.model_id not in catalog.models and not spec.model_id.startswith("byom:"):
        unknown("model_id", "model", spec.model_id, deployable)
    elif spec.model_id in catalog.models and not catalog.models[spec.model_id].deployable:
        problems.append(
            doc.problem(
                (*base, "model_id"),
                "this model is served by providers only and cannot run on dedicated GPUs",
                value=spec.model_id,
                allowed=", ".join(deployable),
                fix="pick a model with an hf_repo in presets.yaml, or call it through the gateway",
            )
        )
    if spec.preset not in catalog.presets:
        unknown("preset", "preset", spec.preset, list(catalog.presets))
    if spec.region not in catalog.regions:
        unknown("region", "region", spec.region, list(catalog.regions))
    gpu = gpu_type_of(spec, catalog)
    if gpu is not None and gpu not in catalog.gpu_types:
        unknown("gpu_type", "gpu type", gpu, list(catalog.gpu_types))
    elif gpu is not None and spec.region in catalog.regions:
        region = catalog.regions[spec.region]
        if gpu not in region.gpu_types:
            elsewhere = catalog.regions_offering(gpu)
            problems.append(
                doc.problem(
                    (*base, "gpu_type" if spec.gpu_type else "preset"),
                    f"gpu type '{gpu}' is not offered in region '{spec.region}'",
                    allowed=f"in {spec.region}: {', '.join(region.gpu_types)}",
                    fix=(f"use region {' or '.join(elsewhere)}" if elsewhere else "pick another gpu type")
                    + f", or a gpu type offered in {spec.region}",
                )
            )
    if spec.backend is Backend.DEDICATED_INFERENCE:
        problems += _dedicated_inference_problems(spec, catalog, doc, base)
    if spec.spot and gpu in catalog.gpu_types:
        offer = catalog.gpu_types[gpu].spot
        if offer is None or spec.region not in offer.regions:
            with_spot = [
                f"{n} in {', '.join(g.spot.regions)}" for n, g in catalog.gpu_types.items() if g.spot
            ]
            problems.append(
                doc.problem(
                    (*base, "spot"),
                    f"no spot droplets of '{gpu}' in '{spec.region}' in the catalog",
                    allowed="; ".join(with_spot) or "no gpu type has a spot offer in the catalog",
                    fix="drop spot, or pick a gpu type and region with a spot offer",
                )
            )
    return problems


def _dedicated_inference_problems(
    spec: DeploymentSpec, catalog: Catalog, doc: Document, base: KeyPath
) -> list[Problem]:
    """What DigitalOcean's Dedicated Inference can serve: Hugging Face checkpoints (not GGUF, not uploads) in
    its regions."""
    out: list[Problem] = []
    where = (*base, "backend")
    offer = catalog.dedicated_inference
    if offer is None:
        return [
            doc.problem(
                where,
                "the catalog has no dedicated_inference section",
                fix="add one to presets.yaml (regions, see docs/catalog.md) or use backend: droplets",
            )
        ]
    if spec.region in catalog.regions and spec.region not in offer.regions:
        out.append(
            doc.problem(
                (*base, "region"),
                f"Dedicated Inference is not offered in '{spec.region}'",
                allowed=", ".join(offer.regions),
                fix="pick one of those regions, or use backend: droplets",
            )
        )
    model = catalog.models.get(spec.model_id)
    if spec.model_id.startswith("byom:") or (model is not None and (model.is_gguf or not model.deployable)):
        out.append(
            doc.problem(
                (*base, "model_id"),
                "Dedicated Inference serves Hugging Face checkpoints only (no GGUF, no uploads)",
                value=spec.model_id,
                fix="use backend: droplets for this model",
            )
        )
    return out


def check_names(raw: dict[str, Any], catalog: Catalog, doc: Document, base: KeyPath) -> list[Problem]:
    """The catalog names of a deployment that did not validate (model, preset, region, gpu type), so that a
    file with several mistakes reports them all at once."""
    problems: list[Problem] = []
    for key, what, options in (
        ("model_id", "model", [m for m, model in catalog.models.items() if model.deployable]),
        ("preset", "preset", list(catalog.presets)),
        ("region", "region", list(catalog.regions)),
        ("gpu_type", "gpu type", list(catalog.gpu_types)),
    ):
        value = raw.get(key)
        if isinstance(value, str) and value not in options and not value.startswith("byom:"):
            problems.append(_unknown_name(doc, base, key, what, value, options))
    return problems


def _unknown_name(
    doc: Document, base: KeyPath, key: str, what: str, value: str, options: list[str]
) -> Problem:
    """A name the catalog does not have, with the closest one it does."""
    return doc.problem(
        (*base, key),
        f"unknown {what}",
        value=value,
        allowed=", ".join(options),
        fix=_suggest(value, options) + " (or add it to presets.yaml)",
    )


def gpu_type_of(spec: DeploymentSpec, catalog: Catalog) -> str | None:
    if spec.gpu_type is not None:
        return spec.gpu_type
    preset = catalog.presets.get(spec.preset)
    return preset.gpu_type if preset else None


def stack_name_of(path: Path) -> str:
    name = path.name
    if not (name.startswith("Pulumi.") and name.endswith((".yaml", ".yml"))):
        raise SpecError(
            [
                Problem(
                    file=str(path),
                    path=(),
                    message="not a stack file name",
                    fix="name it Pulumi.<stack>.yaml",
                )
            ]
        )
    return name.removeprefix("Pulumi.").rsplit(".", 1)[0]


def parse_stack(doc: Document, catalog: Catalog) -> DeploymentSpec:
    data: Any = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise SpecError(
            [
                doc.problem(
                    ("config",), "a stack file needs a top-level 'config' mapping", fix="see stacks/*.yaml"
                )
            ]
        )
    config = data["config"]
    problems: list[Problem] = []
    for key in config:
        if str(key).startswith(f"{PULUMI_PROJECT}:") and key not in KNOWN_PROJECT_KEYS:
            problems.append(
                doc.problem(
                    ("config", key),
                    "unknown config key",
                    allowed=", ".join(sorted(KNOWN_PROJECT_KEYS)),
                    fix=f"remove it or correct its spelling (the deployment lives under {DEPLOYMENT_KEY})",
                )
            )
    base: KeyPath = ("config", DEPLOYMENT_KEY)
    if DEPLOYMENT_KEY not in config:
        problems.append(
            doc.problem(base, "no deployment in this stack", fix=f"add a '{DEPLOYMENT_KEY}' mapping")
        )
        raise SpecError(problems)
    spec, found = validate(DeploymentSpec, config[DEPLOYMENT_KEY], doc, base)
    problems += found
    if spec is not None:
        problems += check_against_catalog(spec, catalog, doc, base)
        for i, alternative in enumerate(spec.alternatives()[1:]):
            problems += check_against_catalog(alternative, catalog, doc, (*base, "fallbacks", i))
    elif isinstance(config[DEPLOYMENT_KEY], dict):  # every problem in one run: the names too
        problems += check_names(config[DEPLOYMENT_KEY], catalog, doc, base)
    if problems or spec is None:
        raise SpecError(problems)
    return spec


def load_stack(path: Path | str, catalog: Catalog) -> DeploymentSpec:
    return parse_stack(load_document(path), catalog)


def stack_files(directory: Path | None = None) -> list[Path]:
    """Deployment stack files of ``directory`` (default: the project's stacks); the gateway's own stack, which
    has no deployment, is skipped."""
    from agentcloud.project import stacks_dir

    directory = directory or stacks_dir()
    return sorted(
        p for p in directory.glob("Pulumi.*.y*ml") if DEPLOYMENT_KEY in p.read_text(encoding="utf-8")
    )


def resolve_stack(arg: str) -> Path:
    """A stack name (prod-inference) or a path to a stack file."""
    path = Path(arg)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    from agentcloud.project import stacks_dir

    return stacks_dir() / f"Pulumi.{arg}.yaml"

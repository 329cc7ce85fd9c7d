"""presets.yaml: the one catalog of gpu types, regions, presets, models and plans, validated on load."""

from __future__ import annotations

import datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from agentcloud.document import Document, load_document, overlay
from agentcloud.errors import CatalogError, Problem
from agentcloud.schema import Strict, validate

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Vendor(StrEnum):
    """GPU vendor: decides the engine image (CUDA or ROCm)."""

    NVIDIA = "nvidia"
    AMD = "amd"


class Task(StrEnum):
    """What a model does; routes refuse a model of another task."""

    GENERATE = "generate"
    EMBED = "embed"
    RERANK = "rerank"
    TRANSCRIBE = "transcribe"
    SPEECH = "speech"


class Precision(StrEnum):
    """Weight precision a preset asks for. vLLM renders BF16 as ``dtype: bfloat16`` and FP8 as
    ``quantization: fp8_per_tensor`` (online FP8 from a 16-bit checkpoint; vLLM 0.33 deprecates the old name
    ``fp8`` for it). There is no int8: vLLM 0.33 rejects it."""

    BF16 = "bf16"
    FP8 = "fp8"


class EngineImages(Strict):
    """Pinned engine images for one vendor."""

    vllm: str
    llamacpp: str


class Checked(Strict):
    """When a figure was last confirmed, and how (``GET /v2/sizes`` by `agentcloud catalog sync`, or a note
    naming the source of a hand-entered figure)."""

    date: datetime.date
    via: str


class SpotOffer(Strict):
    """A gpu type's spot droplets (DigitalOcean's public preview since August 2026): their own size slug,
    price and regions. DigitalOcean may reclaim them at any time."""

    size_slug: str
    hourly_usd: PositiveFloat
    regions: tuple[Slug, ...]
    checked: Checked | None = None


class GpuType(Strict):
    """A GPU droplet size: slug, GPUs, VRAM, price, regions, image."""

    description: str
    size_slug: str
    vendor: Vendor
    gpus: Annotated[int, Field(ge=1, le=8)]
    vram_gib_per_gpu: PositiveFloat
    hourly_usd: PositiveFloat
    droplet_image: str
    engine_images: EngineImages
    contract_only: bool = False
    checked: Checked | None = None
    spot: SpotOffer | None = None

    @property
    def vram_gib(self) -> float:
        return self.gpus * self.vram_gib_per_gpu


class Region(Strict):
    """A DigitalOcean region that offers GPU droplets."""

    name: str
    gpu_types: tuple[Slug, ...]
    confirmed: bool = True
    note: str | None = None
    checked: Checked | None = None


class Speculative(StrEnum):
    """Speculative decoding settings a preset may turn on."""

    NONE = "none"
    NGRAM = "ngram"
    EAGLE3 = "eagle3"  # falls back to ngram for models without an EAGLE-3 head in the catalog


class PerformanceMode(StrEnum):
    """vLLM's performance mode of a preset."""

    BALANCED = "balanced"
    INTERACTIVITY = "interactivity"
    THROUGHPUT = "throughput"


class PresetScaling(Strict):
    """A preset's default autoscaling target."""

    scale_to_zero: bool = False
    idle_timeout_seconds: Annotated[int, Field(ge=60, le=86400)] = 300


class Preset(Strict):
    """A named tuning (cost, balanced, latency, speed) mapped to engine settings."""

    description: str
    spec_config: str = Field(description="the reference product's wording for this preset")
    gpu_type: Slug
    precision: Precision
    kv_cache_dtype: Literal["auto", "fp8"]
    performance_mode: PerformanceMode
    max_num_seqs: Annotated[int, Field(ge=1, le=4096)] | None = None
    max_num_batched_tokens: Annotated[int, Field(ge=512, le=262144)] | None = None
    gpu_memory_utilization: Annotated[float, Field(gt=0.5, le=0.98)] = 0.90
    speculative: Speculative = Speculative.NONE
    num_speculative_tokens: Annotated[int, Field(ge=1, le=10)] = 3
    max_model_len: Annotated[int, Field(ge=512)] = 32768
    min_kv_tokens: Annotated[int, Field(ge=512)] = 32768
    scaling: PresetScaling = PresetScaling()
    # llama.cpp settings for GGUF models
    llamacpp_parallel: Annotated[int, Field(ge=1, le=256)] = 4
    llamacpp_flash_attention: Literal["on", "off", "auto"] = "auto"


class DraftHead(Strict):
    """A draft model (EAGLE head) a model can use for speculative decoding."""

    repo: str
    params_b: PositiveFloat


class Model(Strict):
    """A model the gateway can route. With ``hf_repo`` (and the architecture numbers) it can also be deployed
    on dedicated GPUs; without, it is served by providers only."""

    display_name: str
    task: Task
    tier: Slug
    context_window: Annotated[int, Field(ge=128)]
    hf_repo: str | None = None
    gguf_file: str | None = Field(default=None, description="set for GGUF models: served by llama.cpp")
    gguf_bits_per_weight: PositiveFloat | None = None
    checkpoint: Precision = Precision.BF16
    gated: bool = False
    params_b: PositiveFloat = 0.0
    layers: Annotated[int, Field(ge=0)] = 0
    kv_heads: Annotated[int, Field(ge=0)] = 0
    head_dim: Annotated[int, Field(ge=0)] = 0
    kv_latent: bool = Field(default=False, description="MLA: one latent vector per layer, not K and V")
    moe: bool = False
    dimensions: int | None = None
    eagle3: DraftHead | None = None

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    @property
    def deployable(self) -> bool:
        return self.hf_repo is not None


class Routing(StrEnum):
    """How requests spread over the replicas of a deployment (or the endpoints of a routed model).

    ``prefix_aware`` (the default, chosen by bench/routing): requests whose leading content (system prompt, or
    the first message) is the same go to the same replica, so they meet its prefix cache, with bounded loads
    so one hot prefix cannot pin a replica past its share. ``least_load``: the replica with the fewest
    requests in flight. ``round_robin``: in turn."""

    PREFIX_AWARE = "prefix_aware"
    LEAST_LOAD = "least_load"
    ROUND_ROBIN = "round_robin"


class ApiFormat(StrEnum):
    """The wire format an upstream speaks."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class ProviderModel(Strict):
    """One model at a serverless provider: its upstream name and price."""

    upstream: str = Field(description="the model name the provider expects")
    usd_per_mtok_in: Annotated[float, Field(ge=0)] = 0.0
    usd_per_mtok_out: Annotated[float, Field(ge=0)] = 0.0


class Provider(Strict):
    """A serverless API the gateway routes to. Lower priority is tried first; the next one on errors."""

    description: str
    role: Literal["primary", "fallback", "ultra-fast", "frontier", "embeddings", "speech"]
    priority: Annotated[int, Field(ge=0, le=1000)]
    format: ApiFormat
    base_url: Annotated[str, Field(pattern=r"^https?://")]
    api_key_env: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")]
    models: dict[Slug, ProviderModel]


class Plan(Strict):
    """A key's plan: rank (model tiers it may use) and its rate limits."""

    rank: Annotated[int, Field(ge=0)]
    requests_per_minute: Annotated[int, Field(ge=1)] | None
    tokens_per_minute: Annotated[int, Field(ge=1)] | None


Version = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)*$")]


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


class Runtime(Strict):
    """A GPU runtime: what a droplet image ships (``cuda: "12.9"``, ``rocm: "6.4"``) or an engine image needs
    at least."""

    cuda: Version | None = None
    rocm: Version | None = None
    checked: Checked | None = None


class DedicatedInferenceOffer(Strict):
    """DigitalOcean's managed Dedicated Inference: where it runs. A deployment with
    ``backend: dedicated-inference`` is declared there instead of on droplets (priced per accelerator-hour as
    the same size's droplet unless ``hourly_usd`` names a price per gpu type)."""

    regions: tuple[Slug, ...]
    hourly_usd: dict[Slug, PositiveFloat] = Field(default_factory=dict)
    checked: Checked | None = None


class Catalog(Strict):
    """presets.yaml, validated: gpu types, regions, presets, models, plans and providers."""

    version: Literal[1]
    volume_usd_per_gib_month: PositiveFloat = 0.10
    hours_per_month: PositiveFloat = 744
    gpu_types: dict[Slug, GpuType]
    regions: dict[Slug, Region]
    presets: dict[Slug, Preset]
    models: dict[Slug, Model]
    plans: dict[Slug, Plan]
    providers: dict[Slug, Provider] = Field(default_factory=dict)
    dedicated_inference: DedicatedInferenceOffer | None = None
    droplet_images: dict[str, Runtime] = Field(default_factory=dict)
    engine_images_need: dict[str, Runtime] = Field(default_factory=dict)

    def regions_offering(self, gpu_type: str) -> list[str]:
        return [name for name, region in self.regions.items() if gpu_type in region.gpu_types]

    def providers_for(self, model_id: str) -> list[tuple[str, Provider]]:
        """Providers serving ``model_id``, in routing order."""
        found = [(name, p) for name, p in self.providers.items() if model_id in p.models]
        return sorted(found, key=lambda item: item[1].priority)

    def models_for_plan(self, plan: str) -> list[str]:
        rank = self.plans[plan].rank
        return [mid for mid, m in self.models.items() if self.plans[m.tier].rank <= rank]


def _cross_check(cat: Catalog, doc: Document) -> list[Problem]:
    problems: list[Problem] = []
    gpu_names = ", ".join(cat.gpu_types)
    for rname, region in cat.regions.items():
        for i, gname in enumerate(region.gpu_types):
            if gname not in cat.gpu_types:
                problems.append(
                    doc.problem(
                        ("regions", rname, "gpu_types", i),
                        "unknown gpu type",
                        value=gname,
                        allowed=gpu_names,
                        fix="declare it under gpu_types or remove it from the region",
                    )
                )
    for pname, preset in cat.presets.items():
        if preset.gpu_type not in cat.gpu_types:
            problems.append(
                doc.problem(
                    ("presets", pname, "gpu_type"),
                    "unknown gpu type",
                    value=preset.gpu_type,
                    allowed=gpu_names,
                )
            )
    plan_names = ", ".join(cat.plans)
    for mname, model in cat.models.items():
        if model.tier not in cat.plans:
            problems.append(
                doc.problem(
                    ("models", mname, "tier"), "unknown plan tier", value=model.tier, allowed=plan_names
                )
            )
        if model.is_gguf and model.gguf_bits_per_weight is None:
            problems.append(
                doc.problem(
                    ("models", mname, "gguf_bits_per_weight"),
                    "GGUF models need their bits per weight for the memory fit",
                    fix="add gguf_bits_per_weight (Q4_K_M ~4.9, Q8_0 ~8.5, F16 16)",
                )
            )
        if model.hf_repo is None and not cat.providers_for(mname):
            problems.append(
                doc.problem(
                    ("models", mname),
                    "model has neither an hf_repo (dedicated) nor a provider (serverless)",
                    fix="add hf_repo, or list the model under a provider's models",
                )
            )
        if model.hf_repo is not None and not (
            model.params_b and model.layers and model.kv_heads and model.head_dim
        ):
            problems.append(
                doc.problem(
                    ("models", mname),
                    "a deployable model needs params_b, layers, kv_heads and head_dim for the memory fit",
                    fix="add them from the model's config.json",
                )
            )
    for pname, provider in cat.providers.items():
        for mname in provider.models:
            if mname not in cat.models:
                problems.append(
                    doc.problem(
                        ("providers", pname, "models", mname),
                        "unknown model",
                        allowed=", ".join(cat.models),
                        fix="declare it under models first",
                    )
                )
    ranks: dict[int, str] = {}
    for pname, plan in cat.plans.items():
        if plan.rank in ranks:
            problems.append(
                doc.problem(
                    ("plans", pname, "rank"),
                    f"rank already used by plan '{ranks[plan.rank]}'",
                    value=plan.rank,
                    fix="give every plan a distinct rank (higher includes lower)",
                )
            )
        ranks[plan.rank] = pname
    return problems + _runtime_problems(cat, doc)


def _runtime_problems(cat: Catalog, doc: Document) -> list[Problem]:
    """No engine image may need a newer CUDA or ROCm than its gpu type's droplet image ships (checked only
    where the catalog states both; a project that states neither is not held to it)."""
    problems: list[Problem] = []
    if not cat.droplet_images:
        return problems
    for name, gpu in cat.gpu_types.items():
        ships = cat.droplet_images.get(gpu.droplet_image)
        if ships is None:
            problems.append(
                doc.problem(
                    ("gpu_types", name, "droplet_image"),
                    f"droplet image '{gpu.droplet_image}' is not in droplet_images",
                    fix="add what it ships (cuda or rocm version) under droplet_images",
                )
            )
            continue
        for engine, image in (("vllm", gpu.engine_images.vllm), ("llamacpp", gpu.engine_images.llamacpp)):
            needs = cat.engine_images_need.get(image)
            if needs is None:
                problems.append(
                    doc.problem(
                        ("gpu_types", name, "engine_images", engine),
                        f"engine image '{image}' is not in engine_images_need",
                        fix="add the cuda or rocm version it needs at least under engine_images_need",
                    )
                )
                continue
            for kind in ("cuda", "rocm"):
                need, have = getattr(needs, kind), getattr(ships, kind)
                if need is not None and (have is None or version_tuple(need) > version_tuple(have)):
                    problems.append(
                        doc.problem(
                            ("gpu_types", name, "engine_images", engine),
                            f"'{image}' needs {kind} {need} but {gpu.droplet_image} ships "
                            f"{f'{kind} {have}' if have else f'no {kind}'}",
                            fix=f"pick a build of the engine for {kind} {have}"
                            if have
                            else "pick another image",
                        )
                    )
    return problems


def parse_catalog(doc: Document) -> Catalog:
    if not isinstance(doc.data, dict):
        raise CatalogError(
            [doc.problem((), "the catalog must be a mapping", fix="see presets.yaml in the repo")]
        )
    # Top-level keys starting with "x-" hold YAML anchors (shared engine images), not part of the schema.
    data = {k: v for k, v in doc.data.items() if not str(k).startswith("x-")}
    catalog, problems = validate(Catalog, data, doc)
    if catalog is None:
        raise CatalogError(problems)
    problems = _cross_check(catalog, doc)
    if problems:
        raise CatalogError(problems)
    return catalog


def catalog_sources(path: Path | str | None = None) -> list[Path]:
    """The files the catalog is read from: ``path`` alone when given (a whole catalog), else the shipped
    catalog and, laid over it, the project's presets.yaml when the current project has one."""
    if path is not None:
        return [Path(path)]
    from agentcloud.project import find_project, shipped_catalog

    project = find_project()
    extra = project.catalog_overlay if project is not None else None
    return [shipped_catalog(), *([extra] if extra else [])]


def load_catalog(path: Path | str | None = None) -> Catalog:
    """Load and validate the catalog (see ``catalog_sources``); raises CatalogError listing every problem."""
    return _load_cached(tuple((str(p), _stamp(p)) for p in catalog_sources(path)))


def _stamp(path: Path) -> tuple[int, int]:
    """What tells an edited file from the one cached (a missing file is reported by load_document)."""
    try:
        stat = path.stat()
    except OSError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


@cache
def _load_cached(sources: tuple[tuple[str, tuple[int, int]], ...]) -> Catalog:
    doc = load_document(sources[0][0])
    for path, _ in sources[1:]:
        doc = overlay(doc, load_document(path))
    return parse_catalog(doc)

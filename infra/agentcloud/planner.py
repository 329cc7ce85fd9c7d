"""spec + preset + catalog -> ServingPlan: everything needed to render and provision one deployment.

Pure functions. A deployment that cannot be served as asked raises PlanError with concrete, priced
alternatives (another gpu type, fp8, another preset) rather than producing a config that would crash at load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agentcloud.catalog import (
    Catalog,
    GpuType,
    Model,
    PerformanceMode,
    Precision,
    Preset,
    Routing,
    Speculative,
    Task,
)
from agentcloud.errors import PlanError
from agentcloud.memory import Fit, cache_disk_gib, fit
from agentcloud.spec import Backend, DeploymentSpec, Network, Scaling, Sla, Ssh, gpu_type_of

Engine = Literal["vllm", "llamacpp"]
CONTEXT_STEP = 1024


@dataclass(frozen=True)
class Alternative:
    """Another gpu type, count or precision on which a model fits, with its price."""

    gpu_type: str
    preset: str
    precision: Precision
    kv_cache_dtype: str
    max_kv_tokens: int
    hourly_usd: float
    regions: tuple[str, ...]
    contract_only: bool = False

    def describe(self) -> str:
        where = ", ".join(self.regions) or "no region in the catalog"
        return (
            f"gpu_type: {self.gpu_type}, preset: {self.preset}, precision: {self.precision.value} "
            f"(kv {self.kv_cache_dtype}) -> {self.max_kv_tokens:,} KV tokens, ${self.hourly_usd:.2f}/h per "
            "replica "
            f"[regions: {where}]" + (" (contract only)" if self.contract_only else "")
        )


@dataclass(frozen=True)
class ServingPlan:
    """Everything a deployment needs: size, image, engine args, fit and cost (pure output of `plan`)."""

    name: str
    model_id: str
    model: Model
    preset_name: str
    preset: Preset
    gpu_type_name: str
    gpu: GpuType
    region: str
    replicas: int
    engine: Engine
    engine_image: str
    engine_port: int
    tensor_parallel: int
    precision: Precision
    quantization: str | None
    dtype: str
    kv_cache_dtype: str
    max_model_len: int
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    performance_mode: PerformanceMode
    gpu_memory_utilization: float
    speculative_config: dict[str, Any] | None
    enable_expert_parallel: bool
    runner: str | None
    convert: str | None
    llamacpp_parallel: int
    llamacpp_ctx_size: int
    llamacpp_flash_attention: str
    fit: Fit
    cache_disk_gib: int
    cache_volumes: int
    hourly_usd: float
    monthly_usd: float
    scaling: Scaling | None
    sla: Sla | None
    ssh: Ssh
    network: Network
    notes: tuple[str, ...] = field(default=())
    routing: Routing = Routing.PREFIX_AWARE
    backend: Backend = Backend.DROPLETS
    spot: bool = False

    @property
    def accelerator_type(self) -> str:
        """Dedicated Inference's name of the GPU: vendor and model (``nvidia_h100``), from the size slug."""
        model = self.size_slug.removeprefix("gpu-").split("x", 1)[0]
        return f"{self.vendor}_{model}"

    @property
    def size_slug(self) -> str:
        return self.gpu.spot.size_slug if self.spot and self.gpu.spot else self.gpu.size_slug

    @property
    def droplet_image(self) -> str:
        return self.gpu.droplet_image

    @property
    def vendor(self) -> str:
        return self.gpu.vendor.value

    @property
    def byom(self) -> bool:
        return self.model_id.startswith(BYOM_PREFIX)

    @property
    def quantization_label(self) -> str:
        if self.byom:
            return "gguf (uploaded)"
        if self.engine == "llamacpp":
            return f"gguf {self.model.gguf_bits_per_weight} bpw"
        return self.quantization or self.dtype

    def summary(self) -> dict[str, Any]:
        """The plan as plain JSON-able values (CLI --json, stack outputs)."""
        return {
            "name": self.name,
            "model_id": self.model_id,
            "preset": self.preset_name,
            "gpu_type": self.gpu_type_name,
            "size_slug": self.size_slug,
            "region": self.region,
            "replicas": self.replicas,
            "engine": self.engine,
            "engine_image": self.engine_image,
            "quantization": self.quantization_label,
            "kv_cache_dtype": self.kv_cache_dtype,
            "tensor_parallel": self.tensor_parallel,
            "max_model_len": self.max_model_len,
            "fit": self.fit.verdict,
            "weights_gib": self.fit.weights_gib,
            "max_kv_tokens": self.fit.max_kv_tokens if self.fit.verdict != "at upload" else None,
            "cache_disk_gib": self.cache_disk_gib,
            "hourly_usd": self.hourly_usd,
            "monthly_usd": self.monthly_usd,
            "contract_only": self.gpu.contract_only,
            "concurrency_limit": self.sla.concurrency_limit if self.sla else None,
            "routing": self.routing.value,
            "backend": self.backend.value,
            "spot": self.spot,
            "notes": list(self.notes),
        }


def hourly_droplets(gpu: GpuType, spec: DeploymentSpec, volume_monthly: float, catalog: Catalog) -> float:
    price = gpu.spot.hourly_usd if spec.spot and gpu.spot else gpu.hourly_usd
    return round(price * spec.replicas + volume_monthly / catalog.hours_per_month, 2)


def _precision(spec: DeploymentSpec, preset: Preset, model: Model, notes: list[str]) -> Precision:
    precision = spec.precision or preset.precision
    if model.task is not Task.GENERATE and precision is Precision.FP8:
        notes.append(
            f"{model.task.value} models are served in bf16: online fp8 applies to generative models only"
        )
        return Precision.BF16
    if model.checkpoint is Precision.FP8 and precision is Precision.BF16:
        notes.append("the checkpoint is fp8 and is served as published (no upcast to bf16)")
        return Precision.FP8
    return precision


def _kv_dtype(preset: Preset, model: Model, engine: Engine) -> str:
    if engine == "llamacpp":
        return "q8_0" if preset.kv_cache_dtype == "fp8" else "f16"
    if model.task is not Task.GENERATE:
        return "auto"
    return preset.kv_cache_dtype


def _required_kv(preset: Preset, max_model_len: int) -> int:
    return min(preset.min_kv_tokens, max_model_len)


def _speculative(preset: Preset, model: Model, engine: Engine, notes: list[str]) -> dict[str, Any] | None:
    if preset.speculative is Speculative.NONE or model.task is not Task.GENERATE:
        return None
    if engine == "llamacpp":
        notes.append("speculative decoding skipped: llama.cpp needs a draft GGUF, and none is configured")
        return None
    n = preset.num_speculative_tokens
    if preset.speculative is Speculative.EAGLE3 and model.eagle3 is not None:
        return {"method": "eagle3", "model": model.eagle3.repo, "num_speculative_tokens": n}
    if preset.speculative is Speculative.EAGLE3:
        notes.append("no EAGLE-3 head in the catalog for this model: n-gram speculation instead")
    return {"method": "ngram", "num_speculative_tokens": n, "prompt_lookup_max": 4, "prompt_lookup_min": 2}


def _check_tensor_parallel(model: Model, gpu: GpuType, engine: Engine, gpu_name: str) -> None:
    tp = gpu.gpus
    if engine == "vllm" and tp > 1 and model.kv_heads % tp and tp % model.kv_heads:
        raise PlanError(
            f"{model.display_name} has {model.kv_heads} KV heads, which vLLM cannot split across the "
            f"{tp} GPUs of {gpu_name} (tensor parallel needs one to divide the other); "
            "fix: use a single-GPU gpu type for this model"
        )


def _fit_for(
    model: Model, gpu: GpuType, preset: Preset, precision: Precision, engine: Engine, max_model_len: int
) -> Fit:
    return fit(
        model,
        gpu,
        precision,
        _kv_dtype(preset, model, engine),
        preset.gpu_memory_utilization,
        _required_kv(preset, max_model_len),
        with_draft=preset.speculative is Speculative.EAGLE3 and engine == "vllm",
    )


def alternatives(
    spec: DeploymentSpec, catalog: Catalog, model: Model, max_model_len: int, limit: int = 5
) -> list[Alternative]:
    """Cheapest gpu type / preset / precision combinations that fit, cheapest first."""
    engine: Engine = "llamacpp" if model.is_gguf else "vllm"
    found: dict[tuple[str, str, Precision], Alternative] = {}
    for gname, gpu in catalog.gpu_types.items():
        tp = gpu.gpus
        if not catalog.regions_offering(gname):  # offered nowhere (yet): no use as an alternative
            continue
        if engine == "vllm" and tp > 1 and model.kv_heads % tp and tp % model.kv_heads:
            continue
        for pname, preset in catalog.presets.items():
            precisions = {preset.precision}
            if pname == spec.preset:
                precisions |= {Precision.FP8}  # same preset, fp8 weights
            for precision in precisions:
                prec = _precision(spec.model_copy(update={"precision": precision}), preset, model, [])
                f = _fit_for(model, gpu, preset, prec, engine, max_model_len)
                if not f.fits:
                    continue
                found[(gname, pname, prec)] = Alternative(
                    gpu_type=gname,
                    preset=pname,
                    precision=prec,
                    kv_cache_dtype=_kv_dtype(preset, model, engine),
                    max_kv_tokens=f.max_kv_tokens,
                    hourly_usd=gpu.hourly_usd,
                    regions=tuple(catalog.regions_offering(gname)),
                    contract_only=gpu.contract_only,
                )
    # offered in the user's region first, then the cheapest, then the asked preset, then the most KV room
    ranked = sorted(
        found.values(),
        key=lambda a: (spec.region not in a.regions, a.hourly_usd, a.preset != spec.preset, -a.max_kv_tokens),
    )
    per_gpu: dict[str, int] = {}
    diverse = []
    for alt in ranked:  # at most two per gpu type, so the list shows real choices
        if per_gpu.get(alt.gpu_type, 0) < 2:
            per_gpu[alt.gpu_type] = per_gpu.get(alt.gpu_type, 0) + 1
            diverse.append(alt)
    here = [a for a in diverse if not a.contract_only and spec.region in a.regions]
    elsewhere = [a for a in diverse if not a.contract_only and spec.region not in a.regions]
    chosen = here[:3] + elsewhere[:2]
    chosen += [a for a in diverse if a not in chosen][: limit - len(chosen)]
    return chosen[:limit]


BYOM_PREFIX = "byom:"


def uploaded_model(spec: DeploymentSpec, preset: Preset) -> Model:
    """A stand-in catalog entry for a deployment that serves an uploaded GGUF (bring your own model)."""
    return Model(
        display_name=f"uploaded GGUF {spec.model_id.removeprefix(BYOM_PREFIX)}",
        task=Task.GENERATE,
        tier="free",
        context_window=spec.max_model_len or preset.max_model_len,
        gguf_file="(uploaded)",
        gguf_bits_per_weight=16.0,
    )


def plan(spec: DeploymentSpec, catalog: Catalog) -> ServingPlan:
    """Plan one deployment. The spec must come from parse_stack (names already checked)."""
    notes: list[str] = []
    byom = spec.model_id.startswith(BYOM_PREFIX)
    model = uploaded_model(spec, catalog.presets[spec.preset]) if byom else catalog.models[spec.model_id]
    preset = catalog.presets[spec.preset]
    gpu_name = gpu_type_of(spec, catalog)
    assert gpu_name is not None
    gpu = catalog.gpu_types[gpu_name]
    engine: Engine = "llamacpp" if model.is_gguf else "vllm"
    if byom and spec.gpu_type is None:
        notes.append(
            f"gpu type {gpu_name} from the preset: set gpu_type to size it for the model you will upload"
        )
    _check_tensor_parallel(model, gpu, engine, gpu_name)
    precision = _precision(spec, preset, model, notes)

    wanted_len = spec.max_model_len or preset.max_model_len
    if spec.max_model_len and spec.max_model_len > model.context_window:
        raise PlanError(
            f"max_model_len {spec.max_model_len} exceeds {spec.model_id}'s context window "
            f"({model.context_window}); fix: set max_model_len to at most {model.context_window}"
        )
    max_model_len = min(wanted_len, model.context_window)

    if byom:
        usable = gpu.gpus * (gpu.vram_gib_per_gpu * preset.gpu_memory_utilization - 3.0)
        f = Fit(
            weights_gib=0.0,
            kv_bytes_per_token=1,
            kv_budget_gib=round(usable, 2),
            max_kv_tokens=0,
            required_kv_tokens=0,
            deferred=True,
        )
        notes.append(
            "the model is uploaded later (POST /api/v1/public/models/upload); its fit is checked then"
        )
    else:
        f = _fit_for(model, gpu, preset, precision, engine, max_model_len)
    if not f.fits:
        alts = alternatives(spec, catalog, model, max_model_len)
        if f.kv_budget_gib <= 0:
            why = (
                f"its weights need {f.weights_gib:.1f} GiB in {precision.value} but {gpu_name} leaves "
                f"{f.weights_gib + f.kv_budget_gib:.1f} GiB after the engine's reserve"
            )
        else:
            why = (
                f"after {f.weights_gib:.1f} GiB of {precision.value} weights only {f.max_kv_tokens:,} KV "
                "tokens "
                f"remain, below the {f.required_kv_tokens:,} the '{spec.preset}' preset needs to serve "
                "requests concurrently"
            )
        lines = "\n".join(f"  - {a.describe()}" for a in alts) or "  (none in the catalog)"
        raise PlanError(
            f"{spec.model_id} does not fit {gpu_name} ({gpu.description}): {why}.\nAlternatives that "
            f"fit:\n{lines}",
            alternatives=alts,
        )
    if not f.deferred and f.max_kv_tokens < max_model_len:
        capped = max(CONTEXT_STEP, f.max_kv_tokens // CONTEXT_STEP * CONTEXT_STEP)
        notes.append(
            f"max_model_len capped from {max_model_len} to {capped}: the KV cache holds "
            f"{f.max_kv_tokens:,} tokens"
        )
        max_model_len = capped
    if gpu.contract_only:
        notes.append(f"{gpu_name} is sold by contract only; its price here is an estimate")
    if spec.spot and gpu.spot:
        notes.append(
            f"spot ${gpu.spot.hourly_usd:.2f}/h per droplet (on demand ${gpu.hourly_usd:.2f}/h): "
            "DigitalOcean may reclaim them; an up then lands on demand in the same place, and on the "
            "fallbacks after that"
        )
    region = catalog.regions[spec.region]
    if not region.confirmed:
        notes.append(f"region {spec.region} is unconfirmed: {region.note or 'check with --live'}")

    scaling = spec.scaling
    if scaling is None and preset.scaling.scale_to_zero:
        scaling = Scaling(
            min_replicas=0,
            max_replicas=max(1, spec.replicas),
            scale_to_zero=True,
            idle_timeout_seconds=preset.scaling.idle_timeout_seconds,
        )
        notes.append(f"scale to zero after {scaling.idle_timeout_seconds} s idle (from the preset)")
    volumes = max(spec.replicas, scaling.max_replicas if scaling else 0, 1)
    disk = spec.cache_disk_gib or (100 if byom else cache_disk_gib(model))
    volume_monthly = volumes * disk * catalog.volume_usd_per_gib_month
    hourly = hourly_droplets(gpu, spec, volume_monthly, catalog)
    offer = catalog.dedicated_inference
    if offer is not None and model.deployable and not model.is_gguf and spec.region in offer.regions:
        managed = round(offer.hourly_usd.get(gpu_name, gpu.hourly_usd) * spec.replicas, 2)
        if spec.backend is Backend.DEDICATED_INFERENCE:
            hourly, volumes = managed, 0  # DigitalOcean's service: no droplets, no cache volumes of ours
            droplets = hourly_droplets(gpu, spec, volume_monthly, catalog)
            notes.append(
                "on DigitalOcean Dedicated Inference: DigitalOcean runs the engine; the preset picks the "
                f"accelerator ({gpu.size_slug} x {spec.replicas}); droplets would cost ${droplets:.2f}/h"
            )
        else:
            notes.append(
                f"also servable on DigitalOcean Dedicated Inference in {spec.region} at ${managed:.2f}/h "
                "(backend: dedicated-inference)"
            )

    # llama-server allocates its whole context (all slots) at start: it must fit the KV budget.
    parallel = preset.llamacpp_parallel
    ctx_size = min(
        max_model_len * parallel, max(CONTEXT_STEP, f.max_kv_tokens // CONTEXT_STEP * CONTEXT_STEP)
    )
    flash_attention = preset.llamacpp_flash_attention
    if engine == "llamacpp" and _kv_dtype(preset, model, engine) != "f16" and flash_attention != "on":
        flash_attention = "on"  # llama.cpp refuses a quantized V cache without flash attention
    runner = convert = None
    if model.task is Task.EMBED:
        runner, convert = "pooling", "embed"
    elif model.task is Task.RERANK:
        runner, convert = "pooling", "classify"

    return ServingPlan(
        name=spec.name,
        model_id=spec.model_id,
        model=model,
        preset_name=spec.preset,
        preset=preset,
        gpu_type_name=gpu_name,
        gpu=gpu,
        region=spec.region,
        replicas=spec.replicas,
        engine=engine,
        engine_image=gpu.engine_images.vllm if engine == "vllm" else gpu.engine_images.llamacpp,
        engine_port=spec.network.engine_port,
        tensor_parallel=gpu.gpus,
        precision=precision,
        # online FP8 of a 16-bit checkpoint: vLLM 0.33 names it fp8_per_tensor (plain `fp8` is deprecated)
        quantization=(
            "fp8_per_tensor" if precision is Precision.FP8 and model.checkpoint is Precision.BF16 else None
        ),
        dtype="bfloat16",
        kv_cache_dtype=_kv_dtype(preset, model, engine),
        max_model_len=max_model_len,
        max_num_seqs=preset.max_num_seqs,
        max_num_batched_tokens=preset.max_num_batched_tokens,
        performance_mode=preset.performance_mode,
        gpu_memory_utilization=preset.gpu_memory_utilization,
        speculative_config=_speculative(preset, model, engine, notes),
        enable_expert_parallel=model.moe and gpu.gpus > 1,
        runner=runner,
        convert=convert,
        llamacpp_parallel=parallel,
        llamacpp_ctx_size=ctx_size,
        llamacpp_flash_attention=flash_attention,
        fit=f,
        cache_disk_gib=disk,
        cache_volumes=volumes,
        hourly_usd=hourly,
        monthly_usd=round(hourly * catalog.hours_per_month, 2),
        scaling=scaling,
        sla=spec.sla,
        routing=spec.routing,
        backend=spec.backend,
        spot=spec.spot,
        ssh=spec.ssh,
        network=spec.network,
        notes=tuple(notes),
    )

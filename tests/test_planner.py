"""The planner over the whole catalog, and the memory figures the reference checked by hand."""

from __future__ import annotations

import itertools
from typing import Any, cast

import pytest

from agentcloud.catalog import Catalog, Precision
from agentcloud.errors import PlanError
from agentcloud.memory import GIB, OVERHEAD_GIB_PER_GPU
from agentcloud.planner import Alternative, ServingPlan, plan
from agentcloud.spec import DeploymentSpec, Scaling


def _spec(catalog: Catalog, model: str, gpu: str, preset: str = "balanced", **kw: Any) -> DeploymentSpec:
    region = catalog.regions_offering(gpu)[0]
    return DeploymentSpec(name="t-1", model_id=model, gpu_type=gpu, region=region, preset=preset, **kw)


def offered(catalog: Catalog) -> list[str]:
    """Gpu types some region offers (one in no region, awaiting `catalog sync`, cannot plan)."""
    return [g for g in catalog.gpu_types if catalog.regions_offering(g)]


def all_outcomes(catalog: Catalog) -> list[tuple[tuple[str, str, str], ServingPlan | PlanError]]:
    out: list[tuple[tuple[str, str, str], ServingPlan | PlanError]] = []
    deployable = [m for m, spec in catalog.models.items() if spec.deployable]
    for preset, gpu, model in itertools.product(catalog.presets, offered(catalog), deployable):
        try:
            out.append(((preset, gpu, model), plan(_spec(catalog, model, gpu, preset), catalog)))
        except PlanError as exc:
            out.append(((preset, gpu, model), exc))
    return out


def test_matrix_invariants(catalog: Catalog) -> None:
    outcomes = all_outcomes(catalog)
    deployable = [m for m in catalog.models.values() if m.deployable]
    assert len(outcomes) == len(catalog.presets) * len(offered(catalog)) * len(deployable)
    planned = [p for _, p in outcomes if isinstance(p, ServingPlan)]
    assert len(planned) > len(outcomes) // 2
    for (_, gpu, model), result in outcomes:
        if isinstance(result, PlanError):
            continue
        p = result
        g = catalog.gpu_types[gpu]
        assert p.tensor_parallel == g.gpus
        assert p.fit.fits and p.fit.max_kv_tokens >= p.fit.required_kv_tokens
        used = p.fit.weights_gib + p.fit.max_kv_tokens * p.fit.kv_bytes_per_token / GIB
        assert used <= g.gpus * (g.vram_gib_per_gpu * p.gpu_memory_utilization - OVERHEAD_GIB_PER_GPU) + 0.01
        assert p.max_model_len <= catalog.models[model].context_window
        assert p.max_model_len <= max(p.fit.max_kv_tokens, 1024)
        assert p.engine == ("llamacpp" if catalog.models[model].is_gguf else "vllm")
        if p.engine == "llamacpp":
            assert p.llamacpp_ctx_size <= max(p.fit.max_kv_tokens, 1024)
            assert p.kv_cache_dtype == "f16" or p.llamacpp_flash_attention == "on"
        assert p.hourly_usd >= g.hourly_usd * p.replicas
        assert p.monthly_usd == pytest.approx(p.hourly_usd * 744, abs=0.01)


def test_every_failure_offers_alternatives_that_really_fit(catalog: Catalog) -> None:
    for (preset, gpu, model), result in all_outcomes(catalog):
        if not isinstance(result, PlanError) or "tensor parallel" in str(result):
            continue
        assert result.alternatives, f"{preset}/{gpu}/{model} has no alternative"
        for alt in cast(list[Alternative], result.alternatives):
            spec = _spec(catalog, model, alt.gpu_type, alt.preset, precision=alt.precision)
            assert plan(spec, catalog).fit.fits


def test_70b_fp16_on_one_h100_is_refused_honestly(catalog: Catalog) -> None:
    spec = DeploymentSpec(
        name="prod-inference",
        model_id="llama-3.3-70b-instruct",
        gpu_type="h100",
        region="nyc2",
        preset="speed",
    )
    with pytest.raises(PlanError) as err:
        plan(spec, catalog)
    alternatives = cast(list[Alternative], err.value.alternatives)
    alts = {(a.gpu_type, a.precision) for a in alternatives}
    assert ("h200", Precision.FP8) in alts, "a bigger gpu with fp8 in the same region"
    assert ("mi300x", Precision.BF16) in alts, "the cheapest gpu that holds it in bf16"
    assert all(a.gpu_type != "h100" for a in alternatives), "fp8 on one H100 leaves ~10k KV tokens"


def test_reference_memory_figures(catalog: Catalog) -> None:
    # reference/serving.md: 70B fits one MI300X in bf16 with ~133k KV tokens, ~349k in fp8; one H100 in
    # fp8 ~11k (at 0.90 utilization).
    bf16 = plan(_spec(catalog, "llama-3.3-70b-instruct", "mi300x"), catalog)
    assert bf16.fit.weights_gib == pytest.approx(131.5, abs=0.2)
    assert 120_000 < bf16.fit.max_kv_tokens < 145_000
    fp8 = plan(_spec(catalog, "llama-3.3-70b-instruct", "mi300x", precision=Precision.FP8), catalog)
    assert 330_000 < fp8.fit.max_kv_tokens < 360_000
    with pytest.raises(PlanError, match=r"only 10,\d{3} KV tokens"):
        plan(_spec(catalog, "llama-3.3-70b-instruct", "h100", "balanced", precision=Precision.FP8), catalog)
    assert bf16.fit.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2


def test_maverick_needs_eight_gpus(catalog: Catalog) -> None:
    with pytest.raises(PlanError):
        plan(_spec(catalog, "llama-4-maverick-17b-128e-instruct", "mi300x"), catalog)
    p = plan(_spec(catalog, "llama-4-maverick-17b-128e-instruct", "mi300x_8"), catalog)
    assert p.tensor_parallel == 8 and p.enable_expert_parallel


def test_cost_preset_renders_fp8_not_int8(catalog: Catalog) -> None:
    p = plan(_spec(catalog, "llama-3.3-70b-instruct", "mi300x", "cost"), catalog)
    assert p.quantization == "fp8_per_tensor" and p.kv_cache_dtype == "fp8"
    assert p.scaling is not None and p.scaling.scale_to_zero and p.scaling.min_replicas == 0
    nv = plan(_spec(catalog, "llama-3.1-8b-instruct", "h100", "cost"), catalog)
    assert nv.quantization == "fp8_per_tensor" and nv.engine_image.startswith("vllm/vllm-openai:")


def test_latency_preset_speculates(catalog: Catalog) -> None:
    llama = plan(_spec(catalog, "llama-3.1-8b-instruct", "h100", "latency"), catalog)
    assert llama.speculative_config is not None and llama.speculative_config["method"] == "eagle3"
    qwen = plan(_spec(catalog, "qwen2.5-coder-32b-instruct", "h200", "latency"), catalog)
    assert qwen.speculative_config is not None and qwen.speculative_config["method"] == "ngram"
    assert any("n-gram" in n for n in qwen.notes)


def test_pooling_models(catalog: Catalog) -> None:
    emb = plan(_spec(catalog, "bge-m3", "l40s", "cost"), catalog)
    assert (emb.runner, emb.convert, emb.quantization, emb.speculative_config) == (
        "pooling",
        "embed",
        None,
        None,
    )
    rr = plan(_spec(catalog, "bge-reranker-v2-m3", "l40s"), catalog)
    assert (rr.runner, rr.convert) == ("pooling", "classify")


def test_tensor_parallel_must_divide_heads(catalog: Catalog) -> None:
    with pytest.raises(PlanError, match="12 KV heads"):
        plan(_spec(catalog, "all-minilm-l6-v2", "h100_8"), catalog)


def test_max_model_len_is_capped_to_the_kv_cache(catalog: Catalog) -> None:
    p = plan(_spec(catalog, "llama-3.3-70b-instruct", "h200", "cost", max_model_len=131072), catalog)
    assert p.max_model_len == 131072  # fits: 400k fp8 KV tokens
    too_long = _spec(catalog, "whisper-small", "l40s", max_model_len=4096)
    with pytest.raises(PlanError, match="exceeds whisper-small's context window"):
        plan(too_long, catalog)


def test_cost_counts_replicas_and_volumes(catalog: Catalog) -> None:
    one = plan(_spec(catalog, "llama-3.1-8b-instruct", "h100", "speed"), catalog)
    two = plan(_spec(catalog, "llama-3.1-8b-instruct", "h100", "speed", replicas=2), catalog)
    zero = plan(
        _spec(
            catalog,
            "llama-3.1-8b-instruct",
            "h100",
            "speed",
            replicas=0,
            scaling=Scaling(min_replicas=0, max_replicas=2, scale_to_zero=True),
        ),
        catalog,
    )
    volume_hourly = one.cache_disk_gib * 0.10 / 744
    price = catalog.gpu_types["h100"].hourly_usd
    assert one.hourly_usd == pytest.approx(price + volume_hourly, abs=0.01)
    assert two.hourly_usd == pytest.approx(2 * (price + volume_hourly), abs=0.01)
    assert zero.hourly_usd == pytest.approx(2 * volume_hourly, abs=0.01), "at zero only the kept volumes bill"


def test_alternatives_offered_in_the_region_come_first_then_by_price(catalog: Catalog) -> None:
    """Issue 12: what the user can deploy where they asked comes before cheaper sizes elsewhere."""
    spec = DeploymentSpec(name="q72", model_id="qwen2.5-72b-instruct", gpu_type="l40s", region="tor1")
    with pytest.raises(PlanError) as err:
        plan(spec, catalog)
    alternatives = cast(list[Alternative], err.value.alternatives)
    here = ["tor1" in a.regions for a in alternatives]
    assert here[0] and here == sorted(here, reverse=True), [(a.gpu_type, a.regions) for a in alternatives]
    in_region = [a.hourly_usd for a in alternatives if "tor1" in a.regions]
    assert in_region == sorted(in_region)

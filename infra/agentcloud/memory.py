"""Memory fit: do a model's weights and a useful KV cache fit the GPUs of one replica?

weights    = params x bytes/param (bf16 2, fp8 1, GGUF bits/8), plus any speculative draft head
KV/token   = 2 x layers x kv_heads x head_dim x bytes(kv dtype)   (1 x for latent attention, MLA)
usable     = gpus x (VRAM x gpu_memory_utilization - overhead) - weights
KV tokens  = usable / KV per token

The per-GPU overhead (CUDA graphs, activations, allocator slack) is taken as 3 GiB, as in the checked
reference figures. Pure functions only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agentcloud.catalog import GpuType, Model, Precision

GIB = 1024**3
OVERHEAD_GIB_PER_GPU = 3.0
BYTES_PER_PARAM = {Precision.BF16: 2.0, Precision.FP8: 1.0}
KV_BYTES = {"auto": 2, "fp8": 1, "f16": 2, "q8_0": 1}


@dataclass(frozen=True)
class Fit:
    """How a model fits on a GPU: weights, KV cache per token, tokens that fit."""

    weights_gib: float
    kv_bytes_per_token: int
    kv_budget_gib: float
    max_kv_tokens: int
    required_kv_tokens: int
    deferred: bool = False  # an uploaded model: checked when its GGUF arrives

    @property
    def fits(self) -> bool:
        return self.max_kv_tokens >= self.required_kv_tokens

    @property
    def verdict(self) -> str:
        if self.deferred:
            return "at upload"
        if self.fits:
            return "fits"
        if self.kv_budget_gib <= 0:
            return "weights do not fit"
        return "KV cache too small"


def weight_bytes_per_param(model: Model, precision: Precision) -> float:
    if model.gguf_bits_per_weight is not None:
        return model.gguf_bits_per_weight / 8
    if model.checkpoint is Precision.FP8:
        return BYTES_PER_PARAM[Precision.FP8]  # an FP8 checkpoint is served as FP8
    return BYTES_PER_PARAM[precision]


def weights_gib(model: Model, precision: Precision, with_draft: bool = False) -> float:
    params = model.params_b + (model.eagle3.params_b if with_draft and model.eagle3 else 0.0)
    return params * 1e9 * weight_bytes_per_param(model, precision) / GIB


def kv_bytes_per_token(model: Model, kv_dtype: str) -> int:
    factor = 1 if model.kv_latent else 2
    return factor * model.layers * model.kv_heads * model.head_dim * KV_BYTES[kv_dtype]


def fit(
    model: Model,
    gpu: GpuType,
    precision: Precision,
    kv_dtype: str,
    utilization: float,
    required_kv_tokens: int,
    with_draft: bool = False,
) -> Fit:
    return fit_bytes(
        weights_gib(model, precision, with_draft),
        kv_bytes_per_token(model, kv_dtype),
        gpu,
        utilization,
        required_kv_tokens,
    )


def fit_bytes(
    weights: float, per_token: int, gpu: GpuType, utilization: float, required_kv_tokens: int
) -> Fit:
    """The fit from raw figures: weights in GiB and KV bytes per token (GGUF uploads: not in the catalog)."""
    budget = gpu.gpus * (gpu.vram_gib_per_gpu * utilization - OVERHEAD_GIB_PER_GPU) - weights
    tokens = max(0, math.floor(budget * GIB / per_token)) if budget > 0 else 0
    return Fit(
        weights_gib=round(weights, 2),
        kv_bytes_per_token=per_token,
        kv_budget_gib=round(budget, 2),
        max_kv_tokens=tokens,
        required_kv_tokens=required_kv_tokens,
    )


def cache_disk_gib(model: Model) -> int:
    """Model-cache volume size: the checkpoint on disk plus 10% and 20 GiB of headroom, in steps of 10 GiB."""
    on_disk = weights_gib(model, model.checkpoint, with_draft=True)
    return int(math.ceil((on_disk * 1.1 + 20) / 10) * 10)

"""Bring your own model: names, and the llama.cpp serving config of an uploaded GGUF on a deployment's GPU
(pure).

The fit uses the file's real tensor bytes and the KV geometry from its header; the context is the model's own
(capped by the preset), spread over the preset's parallel slots and sized to what the KV cache can hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentcloud.catalog import GpuType, Preset
from agentcloud.errors import PlanError
from agentcloud.gguf import GGUFInfo
from agentcloud.memory import GIB, KV_BYTES, Fit, fit_bytes

NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
MIN_CONTEXT = 512
CONTEXT_STEP = 256


def check_name(name: str) -> str:
    """A model name is also a file name on the droplet: lowercase, digits, '.', '_', '-', no path parts."""
    if not NAME.match(name) or ".." in name:
        raise ValueError(
            f"invalid model name {name[:80]!r}: use 1-64 lowercase letters, digits, '.', '_' or '-' "
            "(starting and ending with a letter or digit)"
        )
    return name


@dataclass(frozen=True)
class LlamaServing:
    """llama-server's settings for an uploaded GGUF on a GPU: context, parallel slots, fit."""

    model_path: str
    alias: str
    ctx_size: int
    parallel: int
    n_gpu_layers: int
    flash_attn: str
    cache_type: str
    fit: Fit

    def env(self) -> dict[str, str]:
        """llama-server's configuration as LLAMA_ARG_* variables (its own names), for an env file."""
        return {
            "LLAMA_ARG_MODEL": self.model_path,
            "LLAMA_ARG_ALIAS": self.alias,
            "LLAMA_ARG_CTX_SIZE": str(self.ctx_size),
            "LLAMA_ARG_N_PARALLEL": str(self.parallel),
            "LLAMA_ARG_N_GPU_LAYERS": str(self.n_gpu_layers),
            "LLAMA_ARG_FLASH_ATTN": self.flash_attn,
            "LLAMA_ARG_CACHE_TYPE_K": self.cache_type,
            "LLAMA_ARG_CACHE_TYPE_V": self.cache_type,
            "LLAMA_ARG_ENDPOINT_METRICS": "1",
            "LLAMA_ARG_JINJA": "1",
        }


def plan_gguf(
    info: GGUFInfo, gpu: GpuType, gpu_name: str, preset: Preset, model_path: str, alias: str
) -> LlamaServing:
    if not (info.block_count and info.head_count_kv and info.head_dim):
        raise PlanError(
            f"the GGUF ({info.architecture}) lacks block_count, head_count_kv or embedding/head counts in "
            "its "
            "metadata, so its memory needs cannot be checked"
        )
    cache_type = "q8_0" if preset.kv_cache_dtype == "fp8" else "f16"
    per_token = 2 * info.block_count * info.head_count_kv * info.head_dim * KV_BYTES[cache_type]
    context = min(info.context_length or preset.max_model_len, preset.max_model_len)
    parallel = preset.llamacpp_parallel
    f = fit_bytes(
        info.tensor_bytes / GIB,
        per_token,
        gpu,
        preset.gpu_memory_utilization,
        min(context, MIN_CONTEXT * parallel),
    )
    if not f.fits:
        why = (
            f"its weights take {f.weights_gib:.1f} GiB and {gpu_name} has "
            f"{f.weights_gib + f.kv_budget_gib:.1f} GiB "
            "after the engine's reserve"
            if f.kv_budget_gib <= 0
            else f"only {f.max_kv_tokens:,} KV tokens would remain, below {f.required_kv_tokens:,}"
        )
        raise PlanError(f"this GGUF does not fit {gpu_name} ({gpu.description}): {why}")
    ctx_total = min(context * parallel, f.max_kv_tokens // CONTEXT_STEP * CONTEXT_STEP)
    flash = "on" if cache_type != "f16" else preset.llamacpp_flash_attention
    return LlamaServing(model_path, alias, ctx_total, parallel, 999, flash, cache_type, f)

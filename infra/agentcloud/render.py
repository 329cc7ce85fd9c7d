"""ServingPlan -> files: the vLLM config, the engine start wrapper, systemd units and cloud-init user-data.

Pure. Structured files (the vLLM config YAML, cloud-init) are built as dicts and dumped; line-oriented ones
(shell wrappers, systemd units) come from Jinja templates, each given one typed view and doing no arithmetic.
No secret is ever rendered: the HF token and engine API key reach the droplet over SSH into ENV_FILE (see
docs/secrets.md); the only sensitive value in user-data is the SSH host key that lets clients pin the droplet.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from functools import cache
from typing import Any

import jinja2
import yaml

from agentcloud.errors import RenderError
from agentcloud.planner import ServingPlan
from agentcloud.project import find_project, shipped_templates

ENV_FILE = "/etc/agentcloud/engine.env"
BYOM_ENV_FILE = "/etc/agentcloud/byom.env"  # an uploaded model's llama-server settings, written on delivery
BYOM_DIR = "byom"  # under the model cache: uploaded GGUF files
VLLM_CONFIG_PATH = "/etc/agentcloud/vllm.yaml"
MOUNT_POINT = "/mnt/agentcloud-models"
CONTAINER = "agentcloud-engine"
VOLUME_LABEL = "agentcloud-mdl"  # ext4 labels hold 16 characters; one volume per droplet, so one label
VLLM_VERSION = "0.33.0"
METADATA_ADDRESS = "169.254.169.254"

Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _BlockDumper(Dumper):  # type: ignore[misc,valid-type]
    """Multi-line strings as literal blocks, so rendered scripts stay readable in user-data."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _str_presenter)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=120)


@dataclass(frozen=True)
class EngineView:
    """Everything a template may use; computed here so templates stay free of logic."""

    deployment: str
    model_id: str
    engine: str
    engine_version: str
    image: str
    container: str
    port: int
    device_args: tuple[str, ...]
    env: tuple[str, ...]
    env_file: str
    config_path: str
    cache_dir: str
    mount_point: str
    volume_label: str
    llama_args: tuple[str, ...]
    byom_env: str | None


@dataclass(frozen=True)
class HostKey:
    """The droplet's SSH host key pair (OpenSSH format), generated in the stack and pinned by clients."""

    private_openssh: str
    public_openssh: str


@dataclass(frozen=True)
class Rendered:
    """The files of a deployment, by name, as written to a droplet or shown for review."""

    files: dict[str, str]
    user_data: str


def template_dirs() -> tuple[str, ...]:
    """Where templates are looked up: the project's own templates/ first (a file there overrides the shipped
    one of the same name), then the shipped ones."""
    project = find_project()
    own = project.templates if project is not None else None
    return tuple(str(p) for p in (own, shipped_templates()) if p is not None)


def environment() -> jinja2.Environment:
    return _environment(template_dirs())


@cache
def _environment(search_path: tuple[str, ...]) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(list(search_path)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def _template(name: str, view: EngineView) -> str:
    try:
        return environment().get_template(name).render(view=view)
    except jinja2.TemplateError as exc:
        raise RenderError(f"template {name}: {exc}") from exc


def vllm_config(plan: ServingPlan) -> dict[str, Any]:
    """The `vllm serve --config` file: long flag names without dashes; None values are left out."""
    cfg: dict[str, Any] = {
        "model": plan.model.hf_repo,
        "served-model-name": plan.model_id,
        "host": "0.0.0.0",
        "port": plan.engine_port,
        "tensor-parallel-size": plan.tensor_parallel,
        "dtype": plan.dtype,
        "quantization": plan.quantization,
        "kv-cache-dtype": plan.kv_cache_dtype,
        "max-model-len": plan.max_model_len,
        "gpu-memory-utilization": plan.gpu_memory_utilization,
        "max-num-seqs": plan.max_num_seqs,
        "max-num-batched-tokens": plan.max_num_batched_tokens,
        "performance-mode": plan.performance_mode.value,
        "speculative-config": plan.speculative_config,
        "enable-expert-parallel": True if plan.enable_expert_parallel else None,
        "runner": plan.runner,
        "convert": plan.convert,
    }
    return {k: v for k, v in cfg.items() if v is not None}


def llama_server_args(plan: ServingPlan) -> tuple[str, ...]:
    """llama-server flags, one "--flag value" per item: the context is the total across parallel slots;
    every layer on the GPU; the API key comes from LLAMA_API_KEY in the secrets file."""
    model = plan.model
    pairs: list[tuple[str, str | None]] = [
        ("--host", "0.0.0.0"),
        ("--port", str(plan.engine_port)),
        ("--hf-repo", str(model.hf_repo)),
        ("--hf-file", str(model.gguf_file)),
        ("--alias", plan.model_id),
        ("--ctx-size", str(plan.llamacpp_ctx_size)),
        ("--parallel", str(plan.llamacpp_parallel)),
        ("--n-gpu-layers", "999"),
        ("--flash-attn", plan.llamacpp_flash_attention),
        ("--cache-type-k", plan.kv_cache_dtype),
        ("--cache-type-v", plan.kv_cache_dtype),
        ("--metrics", None),
        ("--jinja", None),
    ]
    return tuple(flag if value is None else f"{flag} {shlex.quote(value)}" for flag, value in pairs)


def _device_args(plan: ServingPlan) -> tuple[str, ...]:
    if plan.vendor == "nvidia":
        return ("--gpus all",)
    return (
        "--device /dev/kfd",
        "--device /dev/dri",
        "--group-add=video",
        "--cap-add=SYS_PTRACE",
        "--security-opt seccomp=unconfined",
    )


def engine_view(plan: ServingPlan) -> EngineView:
    env = ["VLLM_ROCM_USE_AITER=1"] if plan.vendor == "amd" and plan.engine == "vllm" else []
    subdir = "huggingface" if plan.engine == "vllm" else "gguf"
    return EngineView(
        deployment=plan.name,
        model_id=plan.model_id,
        engine=plan.engine,
        engine_version=VLLM_VERSION,
        image=plan.engine_image,
        container=CONTAINER,
        port=plan.engine_port,
        device_args=_device_args(plan),
        env=tuple(env),
        env_file=ENV_FILE,
        config_path=VLLM_CONFIG_PATH,
        cache_dir=f"{MOUNT_POINT}/{subdir}",
        mount_point=MOUNT_POINT,
        volume_label=VOLUME_LABEL,
        llama_args=llama_server_args(plan)
        if plan.engine == "llamacpp" and not plan.byom
        else ("--host 0.0.0.0", f"--port {plan.engine_port}"),
        byom_env=BYOM_ENV_FILE if plan.byom else None,
    )


def _host_files(plan: ServingPlan, view: EngineView) -> dict[str, tuple[str, str]]:
    """path on the droplet -> (permissions, content)."""
    engine_dir = "vllm" if plan.engine == "vllm" else "llamacpp"
    files = {
        "/usr/local/bin/agentcloud-engine": ("0755", _template(f"{engine_dir}/run-engine.sh.j2", view)),
        "/usr/local/bin/agentcloud-prepare-cache": ("0755", _template("host/prepare-cache.sh.j2", view)),
        "/usr/local/bin/agentcloud-healthcheck": ("0755", _template("host/healthcheck.sh.j2", view)),
        "/etc/systemd/system/agentcloud-engine.service": (
            "0644",
            _template("host/agentcloud-engine.service.j2", view),
        ),
        "/etc/systemd/system/agentcloud-engine.path": (
            "0644",
            _template("host/agentcloud-engine.path.j2", view),
        ),
        "/etc/systemd/system/agentcloud-model-cache.service": (
            "0644",
            _template("host/agentcloud-model-cache.service.j2", view),
        ),
        "/etc/agentcloud/plan.json": ("0644", json.dumps(plan.summary(), indent=2) + "\n"),
    }
    if plan.engine == "vllm":
        files[VLLM_CONFIG_PATH] = ("0644", dump_yaml(vllm_config(plan)))
    return files


DOCKER_DROPIN = f"""[Service]
# Containers (the engine, and any code a model repo ships) must not read user-data from the metadata service.
ExecStartPost=/usr/sbin/iptables -I DOCKER-USER -d {METADATA_ADDRESS} -j DROP
"""


def cloud_init(
    plan: ServingPlan, files: dict[str, tuple[str, str]], host_key: HostKey | None
) -> dict[str, Any]:
    runcmd: list[list[str]] = [["install", "-d", "-m", "0700", "/etc/agentcloud"]]
    if plan.vendor == "nvidia":
        runcmd.append(["nvidia-ctk", "runtime", "configure", "--runtime=docker"])
    runcmd += [
        ["systemctl", "daemon-reload"],
        ["systemctl", "restart", "docker"],
        ["systemctl", "enable", "--now", "agentcloud-model-cache.service"],
        ["systemctl", "enable", "--now", "agentcloud-engine.path"],
    ]
    all_files = {
        "/etc/systemd/system/docker.service.d/agentcloud-metadata.conf": ("0644", DOCKER_DROPIN),
        **files,
    }
    doc: dict[str, Any] = {
        "package_update": True,
        "packages": ["docker.io", "curl"],
        "write_files": [
            {"path": path, "permissions": perms, "owner": "root:root", "content": content}
            for path, (perms, content) in all_files.items()
        ],
        "runcmd": runcmd,
    }
    if host_key is not None:
        doc["ssh_deletekeys"] = True
        doc["ssh_genkeytypes"] = []
        doc["ssh_keys"] = {
            "ed25519_private": host_key.private_openssh,
            "ed25519_public": host_key.public_openssh,
        }
    return doc


def render(plan: ServingPlan, host_key: HostKey | None = None) -> Rendered:
    """Every artefact for one deployment; ``user_data`` is the droplet's #cloud-config."""
    view = engine_view(plan)
    host_files = _host_files(plan, view)
    user_data = "#cloud-config\n" + dump_yaml(cloud_init(plan, host_files, host_key))
    files = {path.rsplit("/", 1)[-1]: content for path, (_, content) in host_files.items()}
    files["user-data.yaml"] = user_data
    return Rendered(files=files, user_data=user_data)

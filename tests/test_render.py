"""Rendering: every template is sound, every rendered file parses, vLLM gets only flags 0.33 accepts,
no secret is rendered, and a few stacks match their golden files (UPDATE_GOLDEN=1 rewrites them)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from jinja2 import meta, nodes

from agentcloud.catalog import Catalog
from agentcloud.errors import PlanError
from agentcloud.gateway_stack import GatewayView
from agentcloud.planner import ServingPlan, plan
from agentcloud.project import shipped_templates
from agentcloud.render import EngineView, HostKey, environment, render, vllm_config
from agentcloud.spec import load_stack
from tests.conftest import STACKS
from tests.test_planner import all_outcomes

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
VLLM = json.loads((HERE / "data" / "vllm-0.33.0.json").read_text())
GOLDEN_STACKS = ["prod-inference", "cost-70b", "gguf-8b", "embeddings"]
SECRET_MARKERS = ("HF_TOKEN=", "VLLM_API_KEY=", "LLAMA_API_KEY=", "hf_", "--api-key")


def _templates() -> list[str]:
    return sorted(str(p.relative_to(shipped_templates())) for p in shipped_templates().rglob("*.j2"))


@pytest.mark.parametrize("name", _templates())
def test_template_parses_and_uses_only_the_view(name: str) -> None:
    env = environment()
    source = (shipped_templates() / name).read_text()
    ast = env.parse(source)
    assert meta.find_undeclared_variables(ast) <= {"view"}
    view_class = GatewayView if "agentcloud-gateway" in name else EngineView
    fields = set(view_class.__dataclass_fields__)
    used = {
        n.attr
        for n in ast.find_all(nodes.Getattr)
        if isinstance(n.node, nodes.Name) and n.node.name == "view"
    }
    assert used <= fields, f"{name} uses view fields that do not exist: {used - fields}"
    assert not list(ast.find_all(nodes.BinExpr)), f"{name} does arithmetic; compute it in render.py"


def test_strict_undefined_catches_missing_fields() -> None:
    with pytest.raises(jinja2.UndefinedError):
        environment().from_string("{{ view.nope }}").render(view=object())


def _planned(catalog: Catalog) -> list[ServingPlan]:
    return [p for _, p in all_outcomes(catalog) if not isinstance(p, PlanError)]


def _check_vllm_config(cfg: dict[str, Any]) -> None:
    unknown = set(cfg) - set(VLLM["flags"])
    assert not unknown, f"vLLM 0.33 has no such flags: {unknown}"
    for flag in ("quantization", "kv-cache-dtype", "performance-mode", "runner", "convert", "dtype"):
        if flag in cfg:
            assert cfg[flag] in VLLM["values"][flag], f"{flag}: {cfg[flag]} not accepted by vLLM 0.33"
    if "speculative-config" in cfg:
        assert cfg["speculative-config"]["method"] in VLLM["values"]["speculative-config.method"]


def test_render_matrix(catalog: Catalog) -> None:
    plans = _planned(catalog)
    assert len(plans) > 100
    for p in plans:
        r = render(p)
        assert r.user_data.startswith("#cloud-config\n")
        cloud = yaml.safe_load(r.user_data)
        paths = {f["path"] for f in cloud["write_files"]}
        assert "/usr/local/bin/agentcloud-engine" in paths
        assert ["systemctl", "enable", "--now", "agentcloud-engine.path"] in cloud["runcmd"]
        assert "docker.io" in cloud["packages"]
        assert ("nvidia-ctk" in r.user_data) == (p.vendor == "nvidia")
        assert ("/dev/kfd" in r.user_data) == (p.vendor == "amd")
        for marker in SECRET_MARKERS:
            assert marker not in r.user_data
        if p.engine == "vllm":
            cfg = yaml.safe_load(r.files["vllm.yaml"])
            assert cfg == vllm_config(p)
            assert cfg["tensor-parallel-size"] == p.tensor_parallel and cfg["served-model-name"] == p.model_id
            _check_vllm_config(cfg)
        else:
            assert "vllm.yaml" not in r.files
            assert f"--alias {p.model_id}" in r.files["agentcloud-engine"]


def test_host_key_only_when_given(catalog: Catalog) -> None:
    p = plan(load_stack(STACKS / "Pulumi.prod-inference.yaml", catalog), catalog)
    assert "ssh_keys" not in yaml.safe_load(render(p).user_data)
    key = HostKey(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n", "ssh-ed25519 AAAA"
    )
    cloud = yaml.safe_load(render(p, key).user_data)
    assert cloud["ssh_keys"] == {"ed25519_private": key.private_openssh, "ed25519_public": key.public_openssh}
    assert cloud["ssh_deletekeys"] is True and cloud["ssh_genkeytypes"] == []


def test_containers_cannot_reach_the_metadata_service(catalog: Catalog) -> None:
    p = plan(load_stack(STACKS / "Pulumi.cost-70b.yaml", catalog), catalog)
    cloud = yaml.safe_load(render(p).user_data)
    dropin = next(
        f for f in cloud["write_files"] if f["path"].startswith("/etc/systemd/system/docker.service.d/")
    )
    assert "DOCKER-USER -d 169.254.169.254 -j DROP" in dropin["content"]


@pytest.mark.parametrize("stack", GOLDEN_STACKS)
def test_golden(stack: str, catalog: Catalog, tmp_path: Path) -> None:
    p = plan(load_stack(STACKS / f"Pulumi.{stack}.yaml", catalog), catalog)
    files = render(p).files
    folder = GOLDEN / stack
    if os.environ.get("UPDATE_GOLDEN"):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for name, content in files.items():
            (folder / name).write_text(content)
    expected = {f.name: f.read_text() for f in folder.iterdir()}
    assert set(files) == set(expected)
    for name, content in files.items():
        assert content == expected[name], f"{stack}/{name} differs from its golden file"
    for name, content in files.items():  # shell syntax of the rendered scripts
        if content.startswith("#!/bin/sh"):
            script = tmp_path / name
            script.write_text(content)
            subprocess.run(["sh", "-n", str(script)], check=True)

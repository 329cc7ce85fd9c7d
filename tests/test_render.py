"""Rendering: every template is sound, every rendered file parses, vLLM gets only flags 0.33 accepts,
no secret is rendered, and a few stacks match their golden files (UPDATE_GOLDEN=1 rewrites them)."""

from __future__ import annotations

import json
import os
import shutil
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


def generated_host_key() -> HostKey:
    """A real ed25519 pair, as `pulumi up` generates for each deployment."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return HostKey(private, public.decode())


def test_reviewed_user_data_is_the_deployed_one_with_markers_for_the_key(catalog: Catalog) -> None:
    """Issue 9: `agentcloud render` shows the host-key block too (markers where the secret goes), so what is
    reviewed is what `pulumi up` sends."""
    from agentcloud.render import REVIEW_HOST_KEY

    p = plan(load_stack(STACKS / "Pulumi.prod-inference.yaml", catalog), catalog)
    key = generated_host_key()
    deployed, reviewed = render(p, key).user_data, render(p).user_data
    cloud = yaml.safe_load(deployed)
    assert cloud["ssh_keys"] == {"ed25519_private": key.private_openssh, "ed25519_public": key.public_openssh}
    assert cloud["ssh_deletekeys"] is True and "ssh_genkeytypes" not in cloud
    masked = yaml.safe_load(reviewed)
    assert masked["ssh_keys"]["ed25519_private"] == REVIEW_HOST_KEY.private_openssh
    assert {**masked, "ssh_keys": None} == {**cloud, "ssh_keys": None}
    assert "PRIVATE KEY" not in reviewed


CLOUD_INIT = shutil.which("cloud-init")


@pytest.mark.skipif(CLOUD_INIT is None, reason="cloud-init (Debian package) not installed: setup installs it")
@pytest.mark.parametrize("stack", sorted(p.name.split(".")[1] for p in STACKS.glob("Pulumi.*.yaml")))
def test_user_data_passes_cloud_inits_own_schema(stack: str, catalog: Catalog, tmp_path: Path) -> None:
    """What `pulumi up` sends (a real generated host key) and what `render` shows, checked by cloud-init's
    own `cloud-init schema` (Debian's 22.4), for every stack file of the repository, the gateway's too."""
    from agentcloud.gateway_stack import GatewaySpec, user_data

    raw = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())["config"]
    if "agent-cloud:gateway" in raw:
        spec = GatewaySpec.model_validate(raw["agent-cloud:gateway"])
        texts = {"deployed": user_data(spec, generated_host_key()), "reviewed": user_data(spec)}
    else:
        p = plan(load_stack(STACKS / f"Pulumi.{stack}.yaml", catalog), catalog)
        texts = {"deployed": render(p, generated_host_key()).user_data, "reviewed": render(p).user_data}
    for kind, text in texts.items():
        path = tmp_path / f"{kind}.yaml"
        path.write_text(text)
        done = subprocess.run(
            [str(CLOUD_INIT), "schema", "--config-file", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0 and "Valid cloud-config" in done.stdout, (
            f"{kind}: {done.stdout}{done.stderr}"
        )


def test_nvidia_droplets_ensure_their_container_runtime(catalog: Catalog, tmp_path: Path) -> None:
    """Issue 9: the NVIDIA container runtime is ensured (installed when missing, then checked) before the
    engine is enabled; AMD droplets do not run it."""
    from agentcloud.render import NVIDIA_RUNTIME_SCRIPT

    nvidia = plan(load_stack(STACKS / "Pulumi.prod-inference.yaml", catalog), catalog)
    cloud = yaml.safe_load(render(nvidia).user_data)
    runcmd = [c if isinstance(c, str) else " ".join(c) for c in cloud["runcmd"]]
    ensure = runcmd.index(f"{NVIDIA_RUNTIME_SCRIPT} || exit 1")
    assert ensure < next(i for i, c in enumerate(runcmd) if "agentcloud-engine.path" in c)
    script = next(f["content"] for f in cloud["write_files"] if f["path"] == NVIDIA_RUNTIME_SCRIPT)
    assert "apt-get install -y -qq nvidia-container-toolkit" in script and "json .Runtimes" in script
    (tmp_path / "ensure.sh").write_text(script)
    assert subprocess.run(["sh", "-n", str(tmp_path / "ensure.sh")], check=False).returncode == 0
    amd = plan(load_stack(STACKS / "Pulumi.cost-70b.yaml", catalog), catalog)
    assert NVIDIA_RUNTIME_SCRIPT not in render(amd).user_data


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

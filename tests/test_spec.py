"""Stack-file validation: one test per kind of error, each naming file, key path, value and fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentcloud.catalog import Catalog
from agentcloud.errors import PlanError, SpecError
from agentcloud.planner import plan
from agentcloud.spec import load_stack, stack_files
from tests.stackfiles import deployment, write_stack

KEY = "config.agent-cloud:deployment"


def _error(tmp_path: Path, catalog: Catalog, **overrides: object) -> str:
    path = write_stack(tmp_path, deployment(**overrides))
    with pytest.raises(SpecError) as err:
        load_stack(path, catalog)
    text = str(err.value)
    assert str(path) in text, "the message names the file"
    assert "fix:" in text, "the message says how to fix it"
    return text


def test_shipped_stacks_parse(catalog: Catalog) -> None:
    files = stack_files()
    assert len(files) >= 8
    for f in files:
        load_stack(f, catalog)


def test_unknown_gpu_type(tmp_path: Path, catalog: Catalog) -> None:
    text = _error(tmp_path, catalog, gpu_type="h1000")
    assert f"{KEY}.gpu_type: unknown gpu type (got 'h1000')" in text
    assert "allowed: h100," in text and "did you mean 'h100'?" in text


def test_unknown_region(tmp_path: Path, catalog: Catalog) -> None:
    text = _error(tmp_path, catalog, region="lon9")
    assert f"{KEY}.region: unknown region (got 'lon9')" in text and "atl1" in text


def test_unknown_preset(tmp_path: Path, catalog: Catalog) -> None:
    text = _error(tmp_path, catalog, preset="fastest")
    assert f"{KEY}.preset: unknown preset (got 'fastest')" in text and "speed" in text


def test_unknown_model(tmp_path: Path, catalog: Catalog) -> None:
    text = _error(tmp_path, catalog, model_id="llama-3.3-70b-instrct")
    assert f"{KEY}.model_id: unknown model" in text and "did you mean 'llama-3.3-70b-instruct'?" in text


def test_gpu_type_not_offered_in_region(tmp_path: Path, catalog: Catalog) -> None:
    text = _error(tmp_path, catalog, gpu_type="mi300x", region="nyc2")
    assert f"{KEY}.gpu_type: gpu type 'mi300x' is not offered in region 'nyc2'" in text
    assert "allowed: in nyc2: h100, h100_8" in text and "use region atl1 or ric1" in text


def test_replicas_out_of_range(tmp_path: Path, catalog: Catalog) -> None:
    text = _error(tmp_path, catalog, replicas=40)
    assert f"{KEY}.replicas: Input should be less than or equal to 16 (got 40)" in text


def test_replicas_outside_scaling_bounds(tmp_path: Path, catalog: Catalog) -> None:
    text = _error(tmp_path, catalog, replicas=5, scaling={"min_replicas": 1, "max_replicas": 2})
    assert "replicas (5) is outside scaling min_replicas..max_replicas (1..2)" in text
    assert "fix: change replicas or the scaling bounds" in text


def test_scaling_min_above_max(tmp_path: Path, catalog: Catalog) -> None:
    text = _error(tmp_path, catalog, scaling={"min_replicas": 3, "max_replicas": 2})
    assert f"{KEY}.scaling: min_replicas (3) is above max_replicas (2)" in text


def test_unknown_key(tmp_path: Path, catalog: Catalog) -> None:
    text = _error(tmp_path, catalog, replica=2)
    assert f"{KEY}.replica: unknown key" in text
    assert "allowed: name, model_id, region, preset, gpu_type, replicas" in text
    assert "fix: did you mean 'replicas'?" in text


def test_unknown_nested_key(tmp_path: Path, catalog: Catalog) -> None:
    text = _error(tmp_path, catalog, sla={"ttft_ms": 100})
    assert f"{KEY}.sla.ttft_ms: unknown key" in text and "allowed: ttft_target_ms" in text


def test_wrong_type(tmp_path: Path, catalog: Catalog) -> None:
    text = _error(tmp_path, catalog, replicas="two")
    assert f"{KEY}.replicas: Input should be a valid integer" in text and "(got 'two')" in text


def test_ssh_from_the_world_refused(tmp_path: Path, catalog: Catalog) -> None:
    text = _error(tmp_path, catalog, ssh={"allowed_cidrs": ["0.0.0.0/0"]})
    assert f"{KEY}.ssh.allowed_cidrs" in text and "whole internet" in text


def test_unknown_project_config_key(tmp_path: Path, catalog: Catalog) -> None:
    config: dict[str, Any] = {"agent-cloud:deploymnet": {}}
    path = write_stack(tmp_path, deployment(), **config)
    with pytest.raises(SpecError) as err:
        load_stack(path, catalog)
    assert "config.agent-cloud:deploymnet: unknown config key" in str(err.value)


def test_errors_carry_line_numbers(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "Pulumi.lines.yaml"
    path.write_text(
        "config:\n  agent-cloud:deployment:\n    name: x-1\n    model_id: bge-m3\n    region: atl1\n"
        "    gpu_type: b200\n"
    )
    with pytest.raises(SpecError) as err:
        load_stack(path, catalog)
    assert f"{path}:6: {KEY}.gpu_type" in str(err.value)


def test_model_that_does_not_fit(tmp_path: Path, catalog: Catalog) -> None:
    path = write_stack(tmp_path, deployment(gpu_type="h100", region="nyc2", preset="speed"))
    spec = load_stack(path, catalog)
    with pytest.raises(PlanError) as err:
        plan(spec, catalog)
    text = str(err.value)
    assert "llama-3.3-70b-instruct does not fit h100" in text and "131.5 GiB" in text
    assert "Alternatives that fit:" in text and "gpu_type: h200" in text and "precision: fp8" in text

"""The agentcloud CLI, run in-process and as the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.cli import main
from infra.spec import stack_files
from tests.stackfiles import deployment, write_stack


def test_plan_every_shipped_stack_offline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    for path in stack_files():
        assert path.name.removeprefix("Pulumi.").removesuffix(".yaml") in out
    assert "max KV tokens" in out and "$/month" in out


def test_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--json", "cost-70b"]) == 0
    data = json.loads(capsys.readouterr().out)
    (row,) = data["plans"]
    assert row["stack"] == "cost-70b" and row["quantization"] == "fp8" and row["fit"] == "fits"
    assert row["hourly_usd"] > 1.99 and data["errors"] == []


def test_plan_spec_example_exits_non_zero_with_alternatives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_stack(tmp_path, deployment(gpu_type="h100", region="nyc2", preset="speed"))
    assert main(["plan", str(path)]) == 1
    err = capsys.readouterr().err
    assert "does not fit h100" in err and "Alternatives that fit:" in err and "gpu_type: mi300x" in err


def test_plan_reports_spec_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_stack(tmp_path, deployment(region="mars1"))
    assert main(["plan", str(path), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert "unknown region" in data["errors"][0]


def test_render_writes_every_artefact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "prod-inference", "-o", str(tmp_path / "out")]) == 0
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"vllm.yaml", "user-data.yaml", "agentcloud-engine", "agentcloud-engine.service"} <= names
    assert yaml.safe_load((tmp_path / "out" / "vllm.yaml").read_text())["quantization"] == "fp8"


def test_catalog_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "check"]) == 0
    assert "ok (" in capsys.readouterr().out


def test_broken_catalog_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "presets.yaml"
    bad.write_text("version: 2\n")
    assert main(["--catalog", str(bad), "catalog", "check"]) == 2
    assert f"{bad}:1: version" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    exe = shutil.which("agentcloud", path=str(Path(sys.executable).parent))
    assert exe, "pip install -e . installs the agentcloud console script"
    result = subprocess.run([exe, "plan", "--json", "embeddings"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["plans"][0]["model_id"] == "bge-m3"

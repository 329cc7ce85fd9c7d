"""The agentcloud CLI, run in-process and as the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentcloud.cli import main
from agentcloud.spec import stack_files
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
    assert row["stack"] == "cost-70b" and row["quantization"] == "fp8_per_tensor" and row["fit"] == "fits"
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
    assert main(["plan", str(path), "--json"]) == 2  # bad input, not a plan that does not fit
    data = json.loads(capsys.readouterr().out)
    assert "unknown region" in data["errors"][0]


def test_render_writes_every_artefact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "prod-inference", "-o", str(tmp_path / "out")]) == 0
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"vllm.yaml", "user-data.yaml", "agentcloud-engine", "agentcloud-engine.service"} <= names
    assert yaml.safe_load((tmp_path / "out" / "vllm.yaml").read_text())["quantization"] == "fp8_per_tensor"


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


def test_version_answers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("agentcloud ")


def test_mistakes_get_finished_messages_not_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12: creating an org twice, and the deployments CLI with no gateway to reach, each end in one line
    that says what and how to fix it (exit 2), never a library's exception."""
    from tests.sshd import free_port

    db = str(tmp_path / "gw.sqlite3")
    assert main(["gateway", "--database", db, "orgs", "create", "acme", "--id", "org_acme"]) == 0
    capsys.readouterr()
    assert main(["gateway", "--database", db, "orgs", "create", "acme", "--id", "org_acme"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: org 'org_acme' already exists; choose another --id") and "Integrity" not in err
    )
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(SystemExit) as done:
        main(["deployments", "--url", url, "--key", "ak_live_x", "list"])
    message = str(done.value.code)
    assert message.startswith(f"error: cannot reach the gateway at {url}") and "Traceback" not in message


def test_deployments_list_is_a_table_with_a_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentcloud.catalog import load_catalog
    from tests.gateway.harness import world_of

    with world_of(load_catalog(Path(__file__).resolve().parents[1] / "presets.yaml"), tmp_path) as w:
        assert main(["deployments", "--url", w.r.url, "--key", w.keys.admin, "list"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == [
            "ID",
            "NAME",
            "MODEL",
            "GPU",
            "REGION",
            "REPLICAS",
            "STATUS",
            "$/H",
            "COST",
            "TO",
            "DATE",
        ]
        row = next(line for line in lines if w.dep_m in line)
        assert "api-8b" in row and "1/1" in row and "active" in row
        assert lines[0].index("STATUS") == row.index("active"), "columns aligned"
        assert main(["deployments", "--url", w.r.url, "--key", w.keys.admin, "list", "--json"]) == 0
        assert any(d["id"] == w.dep_m for d in json.loads(capsys.readouterr().out))
        # the README's own example with a mistake in it: one finished line, no library text
        with pytest.raises(SystemExit) as done:
            main(
                [
                    "deployments",
                    "--url",
                    w.r.url,
                    "--key",
                    w.keys.admin,
                    "scale",
                    w.dep_m,
                    "--min",
                    "0",
                    "--max",
                    "4",
                ]
            )
        assert done.value.code == (
            "error: 400: scaling: min_replicas 0 needs scale_to_zero: true; fix: set one of them"
        )


def test_gateway_routes_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["gateway", "--database", str(tmp_path / "gw.sqlite3")]
    assert main([*db, "orgs", "create", "acme", "--id", "org_acme"]) == 0
    add = [
        "routes",
        "add",
        "--id",
        "dep_x",
        "--org",
        "org_acme",
        "--model",
        "m1",
        "--endpoint",
        "http://10.0.0.5:8000/v1",
    ]
    assert main([*db, *add]) == 0
    capsys.readouterr()
    assert main([*db, "routes", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "ORG", "MODEL", "ENDPOINTS"] and lines[1].split()[:3] == [
        "dep_x",
        "org_acme",
        "m1",
    ]
    assert main([*db, "routes", "add", "--id", "dep_y"]) == 2
    assert capsys.readouterr().err.strip() == "error: routes add needs --org, --model, --endpoint"
    assert main([*db, "routes", "remove", "--id", "dep_x"]) == 0
    assert main([*db, "routes", "remove", "--id", "dep_x"]) == 2
    assert "no deployment 'dep_x'" in capsys.readouterr().err
    assert main([*db, "routes", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == []


def test_catalog_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "gpus", "--region", "tor1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["GPU", "SIZE", "GPUS"] and all("tor1" in line for line in lines[1:])
    prices = [float(line.split()[4]) for line in lines[1:]]
    assert prices == sorted(prices) and prices, "cheapest first"
    assert main(["catalog", "models", "--task", "embed", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    assert models and {m["TASK"] for m in models} == {"embed"}
    for what in ("presets", "regions"):
        assert main(["catalog", what]) == 0
        assert len(capsys.readouterr().out.splitlines()) > 2


def test_every_mistake_of_a_stack_file_in_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: misspelt keys and an unknown preset in one file are all reported at once, each with a
    'did you mean'."""
    stack = tmp_path / "Pulumi.bad.yaml"
    stack.write_text(
        "config:\n  agent-cloud:deployment:\n    name: bad\n    modle_id: llama-3.1-8b-instruct\n"
        "    replica: 2\n    preset: latncy\n    region: tor1\n"
    )
    assert main(["plan", str(stack)]) != 0
    err = capsys.readouterr().err
    assert "modle_id: unknown key" in err and "did you mean 'model_id'?" in err
    assert "replica: unknown key" in err and "did you mean 'replicas'?" in err
    assert "unknown preset (got 'latncy')" in err and "did you mean 'latency'?" in err


def test_every_setting_the_code_reads_is_documented() -> None:
    """docs/settings.md lists every AGENTCLOUD_* variable the code reads (and GatewayConfig's fields)."""
    import re

    from agentcloud.gateway.config import GatewayConfig

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "settings.md").read_text()
    code = "\n".join(p.read_text() for p in (root / "infra" / "agentcloud").rglob("*.py"))
    read = set(re.findall(r"AGENTCLOUD_[A-Z_]+", code)) - {"AGENTCLOUD_"}
    import inspect

    source = inspect.getsource(GatewayConfig.from_env)  # the (name, type) pairs read as AGENTCLOUD_<NAME>
    named = {f"AGENTCLOUD_{n.upper()}" for n in re.findall(r'\("([a-z_]+)", (?:str|int|float)\)', source)}
    assert len(named) > 20
    missing = sorted(v for v in read | named if f"`{v}`" not in page)
    assert not missing, missing

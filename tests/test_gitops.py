"""GitOps: the guardrail checks (pure), the $/h change report on a real git history, the workflow file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from agentcloud.catalog import Catalog, load_catalog
from agentcloud.gitops import report
from agentcloud.policy_checks import catalog_prices, cost_violation, droplet_violations, firewall_violations
from tests.stackfiles import deployment, write_stack

ROOT = Path(__file__).resolve().parent.parent


def test_firewall_guardrails() -> None:
    ok = {
        "inboundRules": [
            {"portRange": "8000", "sourceTags": ["agentcloud-gateway"]},
            {"portRange": "22", "sourceAddresses": ["203.0.113.0/24"]},
            {"portRange": "443", "sourceAddresses": ["0.0.0.0/0"]},
        ]
    }
    assert firewall_violations(ok) == []
    bad = {
        "inbound_rules": [
            {"port_range": "22", "source_addresses": ["0.0.0.0/0"]},
            {"port_range": "8000", "source_addresses": ["::/0"]},
        ]
    }
    assert [v.split(" ")[0] for v in firewall_violations(bad)] == ["SSH", "port"]


def test_gpu_droplet_guardrails() -> None:
    assert droplet_violations({"size": "gpu-h100x1-80gb", "tags": ["agentcloud"], "vpcUuid": "v"}) == []
    found = droplet_violations({"size": "gpu-h100x1-80gb", "tags": []})
    assert len(found) == 2 and "tagged" in found[0] and "VPC" in found[1]
    assert droplet_violations({"size": "s-2vcpu-4gb"}) == []  # CPU droplets are not GPU droplets


def test_cost_ceiling() -> None:
    prices = catalog_prices()
    drops = [{"size": "gpu-h100x1-80gb"}, {"size": "gpu-h100x1-80gb"}]
    both = 2 * prices["gpu-h100x1-80gb"]
    assert cost_violation(drops, prices, both + 0.01) is None
    assert f"{both:.2f}/h" in str(cost_violation(drops, prices, both - 0.01))
    assert cost_violation(drops, prices, None) is None


def test_report_on_a_git_history(tmp_path: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    write_stack(tmp_path, deployment(name="a-1"), name="a")
    write_stack(tmp_path, deployment(name="b-1"), name="b")
    git("add", ".")
    git("commit", "-qm", "base")
    write_stack(tmp_path, deployment(name="a-1", replicas=2), name="a")  # one more replica
    (tmp_path / "Pulumi.b.yaml").unlink()
    write_stack(tmp_path, deployment(name="c-1", gpu_type="h100", region="nyc2"), name="c")  # does not fit
    monkeypatch.chdir(tmp_path)
    rows, table = report(["Pulumi.a.yaml", "Pulumi.b.yaml", "Pulumi.c.yaml"], "main", catalog)
    by = {r["stack"]: r for r in rows}
    assert by["a"]["after"] - by["a"]["before"] == pytest.approx(
        catalog.gpu_types["mi300x"].hourly_usd + 0.03, abs=0.01
    )  # a droplet and its cache volume
    assert by["b"]["after"] is None and "(removed)" in table
    assert by["c"]["error"] and "does not plan" in table


def test_workflow_runs_preview_with_policy_and_up_on_merge() -> None:
    wf = yaml.safe_load((ROOT / ".github/workflows/deployments.yml").read_text())
    steps = "\n".join(str(s.get("run", "")) for s in wf["jobs"]["deploy"]["steps"])
    assert "pulumi preview" in steps and "--policy-pack policy" in steps
    assert 'agentcloud up "$stack" --policy-pack policy' in steps  # applies with the fallbacks
    assert "agentcloud gitops report" in steps
    # a presets.yaml edit counts: the touched stacks come from the report, not from the changed stack files
    assert "-- 'stacks/Pulumi.*.yaml' presets.yaml" in steps and "--stacks" in steps
    assert set(wf[True]) == {"pull_request", "push"}  # YAML reads the key `on` as True


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


@pytest.mark.parametrize("layout", ["whole catalog", "overlay"])
def test_a_preset_edit_reports_exactly_the_stacks_it_changes(
    layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9: a pull request that edits presets.yaml plans every stack whose plan it changes, and only
    those, each side with its own revision of the catalog; `--stacks` lists them for the workflow."""
    from agentcloud.cli import main

    monkeypatch.delenv("AGENTCLOUD_PROJECT", raising=False)
    assert main(["init", str(tmp_path / "repo")]) == 0
    repo = tmp_path / "repo"
    (repo / "stacks" / "Pulumi.example.yaml").unlink()
    if layout == "whole catalog":
        (repo / "presets.yaml").write_text((ROOT / "presets.yaml").read_text())
    write_stack(
        repo / "stacks",
        deployment(name="on-h100", gpu_type="h100", region="tor1", model_id="llama-3.1-8b-instruct"),
        name="on-h100",
    )
    write_stack(repo / "stacks", deployment(name="on-mi300x"), name="on-mi300x")
    monkeypatch.chdir(repo)
    capsys.readouterr()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "base")
    old = load_catalog().gpu_types["h100"].hourly_usd
    if layout == "whole catalog":
        text = (repo / "presets.yaml").read_text()
        (repo / "presets.yaml").write_text(
            text.replace(f"    hourly_usd: {old}\n", "    hourly_usd: 5.5\n", 1)
        )
    else:
        (repo / "presets.yaml").write_text("gpu_types:\n  h100:\n    hourly_usd: 5.5\n")
    changed = _git(repo, "diff", "--name-only", "main").split()
    assert changed == ["presets.yaml"]
    rows, table = report(changed, "main", load_catalog())
    assert [(r["stack"], r["why"]) for r in rows] == [("on-h100", "catalog")], table
    assert rows[0]["after"] - rows[0]["before"] == pytest.approx(5.5 - old, abs=0.01)
    assert "| on-h100 | catalog |" in table and "on-mi300x" not in table
    assert main(["gitops", "report", "presets.yaml", "--base", "main", "--stacks"]) == 0
    assert capsys.readouterr().out.split() == ["stacks/Pulumi.on-h100.yaml"]

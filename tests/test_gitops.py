"""GitOps: the guardrail checks (pure), the $/h change report on a real git history, the workflow file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from agentcloud.catalog import Catalog
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
    assert set(wf[True]) == {"pull_request", "push"}  # YAML reads the key `on` as True

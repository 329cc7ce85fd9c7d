"""Tenants cannot touch each other's stacks, nor GitOps stacks: a stack made through the API lives in its
org's namespace and workspace, and a deployment registered by hand has no stack the API may scale or destroy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from infra.catalog import Catalog
from infra.lifecycle.operations import api_stack_name, prepare_api_workspace
from infra.store import Store
from tests.gateway.fake_upstream import FakeUpstream
from tests.gateway.harness import PEPPER, Keys, Running, make_gateway, routes_for, running, wait_for
from tests.gateway.test_deployments_api import SPEC, FakeOps

API = "/api/v1/public/deployments"
GIT_STACK = "# the gateway's own stack, reviewed in git\nconfig:\n  agent-cloud:gateway:\n    replicas: 2\n"


@dataclass
class Tenants:
    r: Running
    ops: FakeOps
    api_stacks: Path
    git_stacks: Path
    keys: Keys
    admin_b: str

    def call(self, method: str, path: str, key: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return requests.request(method, f"{self.r.url}{API}{path}", headers=headers, timeout=15, **kw)

    def status(self, dep_id: str, key: str) -> str:
        return str(self.call("GET", f"/{dep_id}", key).json()["status"])


@pytest.fixture
def tenants(
    tmp_path: Path, catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream
) -> Iterator[Tenants]:
    api_stacks, git_stacks = tmp_path / "api-stacks", tmp_path / "repo-stacks"
    api_stacks.mkdir()
    git_stacks.mkdir()
    (git_stacks / "Pulumi.gateway.yaml").write_text(GIT_STACK)
    _, admin_b = store.create_key(PEPPER, "org_b", "admin_b", "professional", "admin")
    ops = FakeOps(int(upstream.base_url.split(":")[2].split("/")[0]), api_stacks)
    routes = routes_for(upstream.base_url)  # dep_a and dep_b: registered by hand, no stack
    gateway = make_gateway(catalog, store, routes, tmp_path, stack_ops=ops, stacks_dir=api_stacks)
    with running(gateway) as r:
        yield Tenants(r, ops, api_stacks, git_stacks, keys, admin_b)


def test_a_tenant_cannot_take_over_a_gitops_or_another_tenants_stack(tenants: Tenants) -> None:
    t = tenants
    mine = t.call("POST", "", t.admin_b, json={**SPEC, "name": "gateway"})
    assert mine.status_code == 202, mine.text
    theirs = t.call("POST", "", t.keys.admin, json={**SPEC, "name": "gateway"})  # same name, other org: fine
    assert theirs.status_code == 202, theirs.text
    assert wait_for(lambda: t.status(mine.json()["id"], t.admin_b) == "active", 15)
    assert wait_for(lambda: t.status(theirs.json()["id"], t.keys.admin) == "active", 15)
    stacks = {call[1] for call in t.ops.calls}
    assert stacks == {"api.org_b.gateway", "api.org_a.gateway"}, stacks
    assert (t.git_stacks / "Pulumi.gateway.yaml").read_text() == GIT_STACK  # git's file, untouched
    assert {p.name for p in t.api_stacks.glob("Pulumi.*.yaml")} == {
        "Pulumi.api.org_b.gateway.yaml",
        "Pulumi.api.org_a.gateway.yaml",
    }
    again = t.call("POST", "", t.admin_b, json={**SPEC, "name": "gateway"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "name_taken"
    gone = t.call("DELETE", f"/{mine.json()['id']}?keep_model_cache=false", t.admin_b)
    assert gone.status_code == 202
    assert wait_for(lambda: t.status(mine.json()["id"], t.admin_b) == "inactive", 15)
    assert ("destroy", "api.org_b.gateway", False) in t.ops.calls
    assert not any(c[0] == "destroy" and c[1] != "api.org_b.gateway" for c in t.ops.calls)
    assert t.status(theirs.json()["id"], t.keys.admin) == "active"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("DELETE", "/dep_a?keep_model_cache=false", None),
        ("PATCH", "/dep_a/scaling", {"min_replicas": 1, "max_replicas": 2}),
        ("POST", "/dep_a/refresh", None),
    ],
)
def test_a_deployment_registered_by_hand_has_no_stack_to_act_on(
    tenants: Tenants, method: str, path: str, body: dict[str, Any] | None
) -> None:
    answer = tenants.call(method, path, tenants.keys.admin, json=body)
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "not_managed", answer.text
    assert tenants.ops.calls == []  # no stack operation of any name ran


def test_the_api_workspace_reads_its_own_stack_files(tmp_path: Path) -> None:
    from infra import PROJECT_ROOT

    project = yaml.safe_load((prepare_api_workspace(tmp_path / "ws") / "Pulumi.yaml").read_text())
    assert project["stackConfigDir"] == "." and project["main"] == str(PROJECT_ROOT)
    assert project["name"] == "agent-cloud" and project["runtime"]["name"] == "python"
    assert (
        api_stack_name("org_a", "prod") == "api.org_a.prod"
        and api_stack_name("o/../x", "p") == "api.o----x.p"
    )

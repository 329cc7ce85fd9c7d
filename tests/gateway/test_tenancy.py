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

from agentcloud.catalog import Catalog
from agentcloud.lifecycle.operations import api_stack_name, prepare_api_workspace
from agentcloud.store import Store
from tests.gateway.fake_upstream import FakeUpstream
from tests.gateway.harness import (
    CHAT_MODEL,
    PEPPER,
    Keys,
    Running,
    make_gateway,
    routes_for,
    running,
    wait_for,
)
from tests.gateway.stand_in_ops import SPEC, FakeOps

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


def test_the_api_workspace_reads_its_own_stack_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentcloud.project import find_project

    workspace = prepare_api_workspace(tmp_path / "ws")
    project = yaml.safe_load((workspace / "Pulumi.yaml").read_text())
    # Pulumi refuses an absolute `main`: the workspace carries its own program (the installed package's)
    assert project["stackConfigDir"] == "." and "main" not in project
    assert project["name"] == "agent-cloud" and project["runtime"]["name"] == "python"
    assert "from agentcloud.program import run" in (workspace / "__main__.py").read_text()
    monkeypatch.chdir(workspace)  # Pulumi runs the program in the project folder: stack files are found there
    found = find_project()
    assert found is not None and found.stacks_dir == workspace.resolve()
    assert (
        api_stack_name("org_a", "prod") == "api.org_a.prod"
        and api_stack_name("o/../x", "p") == "api.o----x.p"
    )


# -- uploads belong to their deployment's org ---------------------------------------------------------------
UPLOADS = "/api/v1/public/models/uploads"


@pytest.fixture
def byom_dep(tenants: Tenants, store: Store) -> str:
    """dep_u of org_a: a deployment with a droplet to deliver to (registered by hand)."""
    from agentcloud.gateway.routing import Deployment, SshHost
    from tests.gateway.harness import record_of

    dep = Deployment(
        "dep_u",
        "org_a",
        "dep_u",
        "byom:none",
        (),
        gpu_type="l40s",
        preset="balanced",
        hosts=(SshHost("127.0.0.1", "ssh-ed25519 AAAA", 22),),
    )
    store.save_deployment(record_of(dep))
    assert wait_for(lambda: "dep_u" in tenants.r.gateway.routes.deployments, 5)
    return dep.id


def _upload(t: Tenants, key: str, method: str, path: str = "", **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}", **kw.pop("headers", {})}
    return requests.request(method, f"{t.r.url}{UPLOADS}{path}", headers=headers, timeout=15, **kw)


def test_an_upload_belongs_to_its_deployments_org(tenants: Tenants, store: Store, byom_dep: str) -> None:
    t = tenants
    # a key of org B that manages org A (a membership) uploads for org A's deployment: the upload is org A's
    guest_id, guest = store.create_key(PEPPER, "org_b", "guest", "professional", "standard")
    store.add_member("org_a", guest_id, ["deployment:manage"])
    made = _upload(t, guest, "POST", json={"name": "m1", "deployment_id": byom_dep, "size": 1024})
    assert made.status_code == 201, made.text
    upload_id = made.json()["id"]
    assert store.upload(upload_id)["org_id"] == "org_a"  # type: ignore[index]
    assert _upload(t, t.keys.admin, "GET", f"/{upload_id}").status_code == 200  # org A sees and may cancel it
    # reading, writing or cancelling needs the right to create it: not any key of the org
    chunk = {
        "headers": {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"},
        "data": b"x" * 8,
    }
    for name, want in (("standard", 403), ("scoped", 403), ("member", 403), ("other_org", 404)):
        key = getattr(t.keys, name)
        got = [
            _upload(t, key, "GET", f"/{upload_id}").status_code,
            _upload(t, key, "PATCH", f"/{upload_id}", **chunk).status_code,
            _upload(t, key, "DELETE", f"/{upload_id}").status_code,
        ]
        assert got == [want] * 3, (name, got)
    assert store.upload(upload_id)["received"] == 0  # type: ignore[index]
    assert _upload(t, t.keys.admin, "DELETE", f"/{upload_id}").status_code == 200


def test_a_multipart_upload_is_refused_before_its_body_is_read(tenants: Tenants, byom_dep: str) -> None:
    """A key that may not upload gets 403 at once, though the declared body (100 MB) never arrives."""
    import socket

    host, port = tenants.r.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            "POST /api/v1/public/models/upload HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {tenants.keys.standard}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000000\r\n\r\n".encode()
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    incoming = tenants.r.gateway.control.uploads.incoming
    assert list(incoming.iterdir()) == []


def test_usage_metrics_show_an_org_only_its_own_series(tenants: Tenants) -> None:
    t = tenants
    client = t.r.openai(t.keys.standard)
    for _ in range(3):
        client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}])
    url = f"{t.r.url}/api/v1/public/inference/metrics"

    def models(key: str) -> dict[str, Any]:
        answer = requests.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        return dict(answer.json()["models"])

    assert wait_for(lambda: models(t.keys.admin).get(CHAT_MODEL, {}).get("requests") == 3, 5)
    assert models(t.admin_b) == {}  # org B's admin sees no series of org A, not even the model names


def test_grants_go_only_to_keys_of_the_deployments_org(tenants: Tenants) -> None:
    t = tenants
    url = f"{t.r.url}/api/v1/public/deployments/dep_a/permissions"
    headers = {"Authorization": f"Bearer {t.keys.admin}"}
    foreign = requests.post(url, headers=headers, json={"api_key_id": t.keys.ids["other_org"]}, timeout=10)
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "api_key_not_found"
    own = requests.post(url, headers=headers, json={"api_key_id": t.keys.ids["scoped_other"]}, timeout=10)
    assert own.status_code == 201, own.text


def test_prometheus_metrics_are_never_anonymous(
    tmp_path: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentcloud.cli import main
    from agentcloud.compose import build
    from agentcloud.gateway.config import GatewayConfig

    monkeypatch.delenv("AGENTCLOUD_METRICS_TOKEN", raising=False)
    monkeypatch.delenv("AGENTCLOUD_KEY_PEPPER", raising=False)
    db = str(tmp_path / "gw.sqlite3")
    config = GatewayConfig.from_env(
        database=db, upload_dir=str(tmp_path / "up"), stacks_dir=str(tmp_path / "st")
    )
    assert config.metrics_token  # the default: derived from the pepper, shared by replicas that share it
    assert main(["gateway", "--database", db, "metrics-token"]) == 0
    assert capsys.readouterr().out.strip() == config.metrics_token
    with running(build(config, catalog=catalog)) as r:
        assert requests.get(f"{r.url}/metrics", timeout=10).status_code == 401
        auth = {"Authorization": f"Bearer {config.metrics_token}"}
        assert requests.get(f"{r.url}/metrics", headers=auth, timeout=10).status_code == 200

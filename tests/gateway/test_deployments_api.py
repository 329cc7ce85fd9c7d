"""The management API over a fake StackOps (no Pulumi CLI here): jobs, 409 on a busy stack, the state machine,
health-gated `active`, the stack file as the source of truth, and who may do what."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from agentcloud.catalog import Catalog
from agentcloud.gateway.routing import RouteTable
from agentcloud.lifecycle.operations import PulumiStackOps, prepare_api_workspace
from agentcloud.store import Store
from tests.gateway.fake_upstream import FakeUpstream
from tests.gateway.harness import PEPPER, Keys, Running, make_gateway, running, wait_for
from tests.gateway.stand_in_ops import SPEC, FakeOps

API = "/api/v1/public/deployments"


@dataclass
class Api:
    r: Running
    keys: Keys
    ops: FakeOps
    stacks: Path
    upstream: FakeUpstream

    def tick(self, now: float) -> list[tuple[str, int, str]]:
        """One autoscaler round at a chosen time, on the gateway's own loop."""
        scaler = self.r.gateway.control.autoscaler
        scaler.clock = lambda: now
        return self.r.run(scaler.tick())

    def call(self, method: str, path: str, key: str | None = None, **kw: Any) -> requests.Response:
        return requests.request(
            method,
            f"{self.r.url}{API}{path}",
            timeout=15,
            headers={"Authorization": f"Bearer {key or self.keys.admin}"},
            **kw,
        )

    def wait_status(self, dep_id: str, status: str) -> dict[str, Any]:
        assert wait_for(lambda: self.call("GET", f"/{dep_id}").json()["status"] == status, 15), self.call(
            "GET", f"/{dep_id}"
        ).json()
        return dict(self.call("GET", f"/{dep_id}").json())


@pytest.fixture
def api(tmp_path: Path, catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream) -> Iterator[Api]:
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    ops = FakeOps(int(upstream.base_url.split(":")[2].split("/")[0]), stacks)
    gateway = make_gateway(
        catalog,
        store,
        RouteTable(),
        tmp_path,
        stack_ops=ops,
        stacks_dir=stacks,
        webhooks_allow_http=True,
        webhooks_allow_loopback=True,
        webhook_backoff_s=0.05,
        webhook_tick_s=0.05,
    )
    with running(gateway) as r:
        yield Api(r, keys, ops, stacks, upstream)


def test_create_becomes_active_and_serves(api: Api) -> None:
    resp = api.call("POST", "", json=SPEC)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert (
        body["id"].startswith("dep_")
        and body["status"] == "provisioning"
        and body["job"]["operation"] == "create"
    )
    dep = api.wait_status(body["id"], "active")
    assert [h["to"] for h in dep["lifecycle"]["history"]] == ["provisioning", "active"]
    stack = yaml.safe_load((api.stacks / "Pulumi.api.org_a.api-8b.yaml").read_text())["config"][
        "agent-cloud:deployment"
    ]
    assert stack["model_id"] == "llama-3.1-8b-instruct" and stack["gpu_type"] == "h100"
    chat = requests.post(
        f"{api.r.url}{API}/{body['id']}/chat/completions",
        timeout=15,
        headers={"Authorization": f"Bearer {api.keys.standard}"},
        json={"messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == "echo: hi"
    listed = api.call("GET", "", key=api.keys.standard).json()["data"]
    assert [d["id"] for d in listed] == [body["id"]]
    assert api.call("GET", "", key=api.keys.other_org).json()["data"] == []


def test_busy_stack_is_409_and_scale(api: Api) -> None:
    api.ops.gate.clear()  # the create's `up` hangs until released
    dep_id = api.call("POST", "", json=SPEC).json()["id"]
    busy = api.call("PATCH", f"/{dep_id}/scaling", json={"min_replicas": 1, "max_replicas": 3})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "operation_in_progress"
    api.ops.gate.set()
    api.wait_status(dep_id, "active")
    scaled = api.call("PATCH", f"/{dep_id}/scaling", json={"min_replicas": 2, "max_replicas": 3})
    assert scaled.status_code == 202 and scaled.json()["status"] == "scaling"
    dep = api.wait_status(dep_id, "active")
    assert len(dep["endpoints"]) == 2 and dep["scaling"]["min_replicas"] == 2
    assert ("up", "api.org_a.api-8b", 2) in api.ops.calls
    assert [h["to"] for h in dep["lifecycle"]["history"]] == ["provisioning", "active", "scaling", "active"]


def test_teardown_keeps_or_deletes_the_model_cache(api: Api) -> None:
    dep_id = api.call("POST", "", json=SPEC).json()["id"]
    api.wait_status(dep_id, "active")
    resp = api.call("DELETE", f"/{dep_id}?keep_model_cache=false")
    assert resp.status_code == 202 and resp.json()["status"] == "teardown"
    dep = api.wait_status(dep_id, "inactive")
    assert ("destroy", "api.org_a.api-8b", False) in api.ops.calls and dep["endpoints"] == []
    assert (
        requests.post(
            f"{api.r.url}{API}/{dep_id}/chat/completions",
            headers={"Authorization": f"Bearer {api.keys.admin}"},
            json={"messages": [{"role": "user", "content": "x"}]},
        ).status_code
        == 503
    )


def test_sla_targets(api: Api) -> None:
    dep_id = api.call("POST", "", json=SPEC).json()["id"]
    api.wait_status(dep_id, "active")
    resp = api.call("PATCH", f"/{dep_id}/sla", json={"ttft_target_ms": 300, "concurrency_limit": 5})
    assert resp.status_code == 200 and resp.json()["targets"] == {
        "ttft_target_ms": 300,
        "concurrency_limit": 5,
    }
    assert api.r.gateway.routes.deployments[dep_id].concurrency_limit == 5
    assert api.call("GET", f"/{dep_id}/sla", key=api.keys.standard).json()["history"] == []
    assert api.call("PATCH", f"/{dep_id}/sla", json={"ttft_target_ms": -1}).status_code == 400


def test_bad_specs(api: Api) -> None:
    bad = api.call("POST", "", json={**SPEC, "gpu_type": "h1000"})
    assert bad.status_code == 400 and "gpu_type: unknown gpu type" in bad.json()["error"]["message"]
    big = api.call(
        "POST", "", json={**SPEC, "name": "big", "model_id": "llama-3.3-70b-instruct", "region": "nyc2"}
    )
    assert big.status_code == 422 and "Alternatives that fit" in big.json()["error"]["message"]
    assert api.call("POST", "", json={**SPEC, "replicas": "two"}).status_code == 400


def test_who_may_do_what(api: Api) -> None:
    dep_id = api.call("POST", "", json=SPEC).json()["id"]
    api.wait_status(dep_id, "active")
    k = api.keys
    # key -> (create another, read, scale, delete); the admin's delete meets its own scale job: 409
    expected = {
        "admin": (202, 200, 202, 409),
        "standard": (403, 200, 403, 403),
        "scoped": (403, 403, 403, 403),
        "other_org": (403, 404, 404, 404),
        "member": (403, 200, 403, 403),
        "member_read_only": (403, 200, 403, 403),
    }
    wrong = []
    for name, want in expected.items():
        key = getattr(k, name)
        got = (
            api.call("POST", "", key=key, json={**SPEC, "name": f"x-{name.replace('_', '-')}"}).status_code,
            api.call("GET", f"/{dep_id}", key=key).status_code,
            api.call("PATCH", f"/{dep_id}/scaling", key=key, json={"max_replicas": 2}).status_code,
            api.call("DELETE", f"/{dep_id}", key=key).status_code,
        )
        if got != want:
            wrong.append(f"{name}: {got}, designed {want}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.skipif(
    shutil.which("pulumi") is None, reason="the pulumi CLI is not on PATH (not installable here)"
)
def test_automation_api_selects_a_stack_on_a_file_backend(tmp_path: Path) -> None:
    ops = PulumiStackOps(prepare_api_workspace(tmp_path / "ws"), backend_url=f"file://{tmp_path}")
    stack = ops._stack("automation-test")
    assert stack.name == "automation-test"


def test_without_the_cli_operations_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentcloud.automation import PulumiUnavailable

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(PulumiUnavailable, match="pulumi CLI is not on PATH"):
        PulumiStackOps(Path(".")).up("x", print)


def test_cli_lifecycle(api: Api, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from agentcloud.cli import main

    stack = tmp_path / "Pulumi.cli-8b.yaml"
    stack.write_text(yaml.safe_dump({"config": {"agent-cloud:deployment": {**SPEC, "name": "cli-8b"}}}))
    base = ["deployments", "--url", api.r.url, "--key", api.keys.admin]
    assert main([*base, "create", str(stack)]) == 0
    out = capsys.readouterr().out
    assert "cli-8b: provisioning" in out and "cli-8b: active" in out and "Updating (api.org_a.cli-8b)" in out
    dep_id = out.split("created ")[1].split(" ")[0]
    assert main([*base, "list"]) == 0 and dep_id in capsys.readouterr().out
    assert main([*base, "scale", dep_id, "--min", "1", "--max", "2"]) == 0
    assert "cli-8b: active" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:  # min 0 without scale-to-zero: one finished line
        main([*base, "scale", dep_id, "--min", "0", "--max", "4"])
    message = str(refused.value.code)
    assert "min_replicas 0 needs scale_to_zero" in message and "pydantic" not in message, message
    assert main([*base, "sla", dep_id, "--ttft-ms", "250"]) == 0
    assert '"ttft_target_ms": 250' in capsys.readouterr().out
    assert main([*base, "refresh", dep_id]) == 0
    assert main([*base, "teardown", dep_id]) == 0
    assert "cli-8b: inactive" in capsys.readouterr().out
    assert ("destroy", "api.org_a.cli-8b", True) in api.ops.calls
    with pytest.raises(SystemExit, match="404"):
        main([*base, "get", "dep_nope"])


def test_refresh_finds_drift(api: Api) -> None:
    dep_id = api.call("POST", "", json={**SPEC, "name": "drift", "replicas": 2}).json()["id"]
    api.wait_status(dep_id, "active")
    original = api.ops.up

    def one_droplet_gone(stack: str, progress: Any) -> dict[str, Any]:
        out = original(stack, progress)
        out["endpoints"] = out["endpoints"][:1]
        return out

    api.ops.refresh = one_droplet_gone  # type: ignore[method-assign]
    assert api.call("POST", f"/{dep_id}/refresh").status_code == 202
    dep = api.wait_status(dep_id, "degraded")
    assert "drift: 1 of 2" in dep["lifecycle"]["history"][-1]["reason"]


def _chat(api: Api, dep_id: str, wake_timeout: str | None = None, content: str = "hi") -> requests.Response:
    headers = {"Authorization": f"Bearer {api.keys.admin}"}
    if wake_timeout is not None:
        headers["X-AgentCloud-Wake-Timeout"] = wake_timeout
    return requests.post(
        f"{api.r.url}{API}/{dep_id}/chat/completions",
        headers=headers,
        timeout=30,
        json={"messages": [{"role": "user", "content": content}]},
    )


ZERO = {"min_replicas": 0, "max_replicas": 2, "scale_to_zero": True, "idle_timeout_seconds": 60}


def test_scale_to_zero_then_wake_on_request(api: Api) -> None:
    dep_id = api.call("POST", "", json={**SPEC, "name": "zero", "scaling": ZERO}).json()["id"]
    api.wait_status(dep_id, "active")
    t0 = time.time()
    assert api.tick(t0) == []  # starts the idle clock
    assert api.tick(t0 + 30) == []
    (action,) = api.tick(t0 + 61)
    assert action[1] == 0 and "scale to zero" in action[2]
    dep = api.wait_status(dep_id, "inactive")
    assert dep["endpoints"] == [] and dep["lifecycle"]["history"][-1]["reason"] == "scaled to zero"
    ups_before = sum(1 for c in api.ops.calls if c[0] == "up")
    replies: list[requests.Response] = []
    threads = [threading.Thread(target=lambda: replies.append(_chat(api, dep_id, "20"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r.status_code for r in replies] == [200, 200, 200], [r.text for r in replies]
    assert sum(1 for c in api.ops.calls if c[0] == "up") == ups_before + 1, "one wake for three requests"
    assert api.call("GET", f"/{dep_id}").json()["status"] == "active"
    # what the metrics say: three requests waited for the wake, the autoscaler decided once each way
    assert api.r.gateway.metrics.wakes[dep_id].count == 3
    store = api.r.gateway.store
    assert store.scaling_counts() == {(dep_id, "zero"): 1, (dep_id, "wake"): 1}


def test_wake_past_the_bound_is_503_never_404(api: Api) -> None:
    dep_id = api.call("POST", "", json={**SPEC, "name": "slow-wake", "scaling": ZERO}).json()["id"]
    api.wait_status(dep_id, "active")
    t0 = time.time()
    api.tick(t0)
    api.tick(t0 + 61)
    api.wait_status(dep_id, "inactive")
    api.ops.gate.clear()  # the wake's `up` takes long
    started = time.monotonic()
    slow = _chat(api, dep_id, "0.5")
    assert slow.status_code == 503 and slow.headers["Retry-After"] == "30" and time.monotonic() - started < 5
    assert api.r.gateway.metrics.wake_timeouts[dep_id] == 1  # over its budget: counted for the alert
    api.ops.gate.set()
    api.wait_status(dep_id, "active")
    assert _chat(api, dep_id).status_code == 200


def test_scale_up_under_engine_queue(api: Api) -> None:
    scaling = {"min_replicas": 1, "max_replicas": 3, "target_in_flight_per_replica": 4}
    dep_id = api.call("POST", "", json={**SPEC, "name": "busy", "scaling": scaling}).json()["id"]
    api.wait_status(dep_id, "active")
    api.upstream.metrics_text = (
        'vllm:num_requests_waiting{model_name="m"} 7\nvllm:num_requests_running{model_name="m"} 3\n'
    )
    (action,) = api.tick(time.time())
    assert action[1] == 3 and "scale up" in action[2]  # 10 in flight / 4 per replica
    assert len(api.wait_status(dep_id, "active")["endpoints"]) == 3


def test_sla_breach_fires_a_signed_webhook(api: Api) -> None:
    from tests.gateway.test_webhooks import Receiver, verify

    dep_id = api.call("POST", "", json={**SPEC, "name": "sla"}).json()["id"]
    api.wait_status(dep_id, "active")
    receiver = Receiver(fail_rate=0.0)
    with receiver.serving():
        hook = api.call(
            "POST",
            f"/{dep_id}/webhooks",
            json={"url": f"http://127.0.0.1:{receiver.port}/hook", "events": ["deployment.sla_breach"]},
        )
        assert hook.status_code == 201
        api.call("PATCH", f"/{dep_id}/sla", json={"ttft_target_ms": 5})
        for _ in range(25):  # the fake engine waits 20 ms before answering: TTFT over the 5 ms target
            assert _chat(api, dep_id, content="[[delay=0.02]]").status_code == 200
        api.tick(time.time())
        assert wait_for(lambda: len(receiver.received) == 1, 10)
    body, headers = receiver.received[0]
    assert verify(body, headers["X-AINative-Signature"], hook.json()["secret"])
    event = json.loads(body)
    assert event["type"] == "deployment.sla_breach" and event["data"]["metric"] == "ttft_p95_ms"
    history = api.call("GET", f"/{dep_id}/sla").json()["history"]
    assert history and history[0]["event"] == "breach"


@pytest.mark.parametrize(
    ("cli", "token", "missing"),
    [(None, "dop_v1_x", "pulumi CLI is not on PATH"), ("/usr/bin/pulumi", None, "DIGITALOCEAN_TOKEN")],
)
def test_create_checks_its_preconditions_before_any_record_exists(
    tmp_path: Path,
    catalog: Catalog,
    store: Store,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    cli: str | None,
    token: str | None,
    missing: str,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: cli)
    for name in ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    if token:
        monkeypatch.setenv("DIGITALOCEAN_TOKEN", token)
    ops = PulumiStackOps(work_dir=tmp_path, backend_url=f"file://{tmp_path}")
    with running(make_gateway(catalog, store, RouteTable(), tmp_path, stack_ops=ops)) as r:
        answer = requests.post(
            f"{r.url}{API}", headers={"Authorization": f"Bearer {keys.admin}"}, json=SPEC, timeout=15
        )
        assert answer.status_code == 503 and missing in answer.json()["error"]["message"], answer.text
        assert answer.headers["Retry-After"] == "60"
    assert store.deployments() == []  # nothing to forget: the same request works once it is fixed


def test_a_failed_create_says_why(api: Api, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from agentcloud.cli import main

    def refuse(stack: str, progress: Any) -> dict[str, Any]:
        raise RuntimeError("size gpu-h100x1-80gb is not available in tor1")

    api.ops.up = refuse  # type: ignore[method-assign]
    stack = tmp_path / "Pulumi.broken.yaml"
    stack.write_text(yaml.safe_dump({"config": {"agent-cloud:deployment": {**SPEC, "name": "broken"}}}))
    assert main(["deployments", "--url", api.r.url, "--key", api.keys.admin, "create", str(stack)]) == 1
    out = capsys.readouterr().out
    assert "broken: degraded (create failed: size gpu-h100x1-80gb is not available in tor1)" in out
    # once capacity is back: retried with `deployments up` (no need to forget the record)
    api.ops.up = FakeOps.up.__get__(api.ops)  # type: ignore[method-assign]
    dep_id = out.split("created ")[1].split(" ")[0]
    assert main(["deployments", "--url", api.r.url, "--key", api.keys.admin, "up", dep_id]) == 0
    assert "broken: active" in capsys.readouterr().out


def _git_stack(name: str, **changes: Any) -> dict[str, str]:
    text = "# in git\n" + yaml.safe_dump(
        {"config": {"agent-cloud:deployment": {**SPEC, "name": name, **changes}}}
    )
    return {"stack": name, "stack_file": text}


def test_git_stacks_are_registered_served_and_refused_where_git_owns_them(api: Api, store: Store) -> None:
    """A stack applied from git is registered (outputs read, not upped), served once healthy; a bad file is a
    400 naming its line; another org's stack name, a name in use, and changes that belong in git are 409;
    registering again follows the file and keeps nothing else."""
    url = f"{api.r.url}/api/v1/public/gitops/stacks"

    def register(body: dict[str, Any], key: str | None = None) -> requests.Response:
        return requests.post(
            url, json=body, headers={"Authorization": f"Bearer {key or api.keys.admin}"}, timeout=15
        )

    made = register(_git_stack("git-8b"))
    assert made.status_code == 202, made.text
    dep_id = made.json()["id"]
    assert api.wait_status(dep_id, "active")["endpoints"]
    assert ("up", "git-8b", 1) in api.ops.calls  # the refresh of the stand-in reads the file's outputs
    assert (api.stacks / "Pulumi.git-8b.yaml").read_text().startswith("# in git")  # the copy, byte for byte

    bad = register({"stack": "git-bad", "stack_file": "config:\n  agent-cloud:deployment:\n    name: x\n"})
    assert bad.status_code == 400 and "stacks/Pulumi.git-bad.yaml:3" in bad.json()["error"]["message"], (
        bad.text
    )
    _, admin_b = store.create_key(PEPPER, "org_b", "admin_b", "professional", "admin")
    taken = register(_git_stack("git-8b"), key=admin_b)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "owned_by_git"
    clash = api.call("POST", "", json={**SPEC, "name": "api-made"})
    assert clash.status_code == 202
    again = register({**_git_stack("api-made-git"), "stack_file": _git_stack("api-made")["stack_file"]})
    assert (
        again.status_code == 409 and "another deployment named api-made" in again.json()["error"]["message"]
    )
    scaling = api.call("PATCH", f"/{dep_id}/scaling", json={"min_replicas": 1, "max_replicas": 2})
    assert scaling.status_code == 409 and "stacks/Pulumi.git-8b.yaml" in scaling.json()["error"]["message"]
    assert api.call("DELETE", f"/{dep_id}").status_code == 409
    assert register({"stack": "api.org_a.x", "stack_file": "x"}).status_code == 400  # API stacks have dots

    followed = register(_git_stack("git-8b", preset="balanced"))
    assert followed.status_code == 202 and followed.json()["id"] == dep_id
    assert api.wait_status(dep_id, "active")["preset"] == "balanced"

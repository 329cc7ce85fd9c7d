"""The whole system on the DigitalOcean twin (issue 9), with no manual step: a deployment created through
the management API goes create -> active because the real Pulumi program (under Pulumi's mocks, converged
onto the twin's API through pydo) makes droplets that boot from their user-data in network namespaces, the
control plane pushes the engine's secrets over SFTP (host key pinned), the engine starts (llama.cpp standing
in for the image), and the gateway serves chat through it with the openai SDK; DELETE leaves the twin
without its droplets."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
import yaml

from agentcloud.catalog import Catalog
from agentcloud.gateway.routing import RouteTable
from agentcloud.lifecycle.mocked import ProgramOps
from agentcloud.lifecycle.operations import prepare_api_workspace
from agentcloud.store import Store
from agentcloud.tiny_gguf import write_tiny_gguf
from agentcloud.twin.api import Twin
from tests.gateway.harness import Keys, Running, make_gateway, running, wait_for
from tests.gateway.stand_in_ops import SPEC
from tests.gateway.test_webhooks import Receiver, verify
from tests.test_twin_hosts import pytestmark as needs_hosts
from tests.test_twin_hosts import twin_with_hosts

pytestmark = [pytest.mark.e2e, needs_hosts]

TOKEN = "dop_v1_e2e"
ENGINE_KEY = "engine-key-e2e"
SIZES = [
    {"slug": "gpu-h100x1-80gb", "available": True, "regions": ["tor1"], "price_hourly": 4.41},
    {"slug": "gpu-l40sx1-48gb", "available": True, "regions": ["tor1"], "price_hourly": 1.57},
]
API = "/api/v1/public"


@pytest.fixture
def system(
    tmp_path: Path, catalog: Catalog, store: Store, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Running, Twin, Keys, str]]:
    monkeypatch.setenv("AGENTCLOUD_ENGINE_API_KEY", ENGINE_KEY)  # the data plane's key to the engines
    with twin_with_hosts(tmp_path, TOKEN, SIZES, "ace") as (twin, _, url, client_key):
        workspace = prepare_api_workspace(tmp_path / "api-stacks")
        gateway = make_gateway(
            catalog,
            store,
            RouteTable(),
            tmp_path,
            stack_ops=ProgramOps(workspace, url, TOKEN),
            stacks_dir=workspace,
            engine_api_key=ENGINE_KEY,
            ssh_key=client_key,
            secrets_retry_s=15.0,  # a droplet that never boots is given up on sooner than in production
            webhooks_allow_http=True,  # the receiver is on 127.0.0.1
            webhooks_allow_loopback=True,
            webhook_backoff_s=0.05,
            webhook_tick_s=0.05,
            max_model_bytes=16 * 1024 * 1024,
        )
        with running(gateway) as r:
            yield r, twin, keys, url


def _call(r: Running, key: str, method: str, path: str, **kw: Any) -> requests.Response:
    return requests.request(
        method,
        f"{r.url}{API}/deployments{path}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        **kw,
    )


def _status(r: Running, key: str, dep_id: str, status: str, timeout_s: float = 120) -> dict[str, Any]:
    """The deployment once it reaches ``status`` (fails, naming where it is, when it does not)."""
    reached = wait_for(lambda: _call(r, key, "GET", f"/{dep_id}").json()["status"] == status, timeout_s)
    dep = dict(_call(r, key, "GET", f"/{dep_id}").json())
    assert reached, (status, dep["status"], (dep.get("lifecycle") or {}).get("history", [])[-1:])
    return dep


def _healthy(base: str) -> bool:
    try:
        return requests.get(f"{base}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _prompt_tokens(endpoint: str) -> float:
    """How many prompt tokens a replica's llama-server has processed (its own /metrics)."""
    text = requests.get(
        endpoint.removesuffix("/v1") + "/metrics",
        headers={"Authorization": f"Bearer {ENGINE_KEY}"},
        timeout=5,
    ).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("llamacpp:prompt_tokens_total")
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1."""
    with Receiver(fail_rate=0.0).serving() as running_receiver:
        yield running_receiver


def test_create_serve_scale_drift_zero_wake_delete(
    system: tuple[Running, Twin, Keys, str], receiver: Receiver
) -> None:
    r, twin, keys, url = system
    started = time.monotonic()
    made = _call(r, keys.admin, "POST", "", json=SPEC)
    assert made.status_code == 202, made.text
    dep_id = made.json()["id"]
    subscribed = _call(
        r, keys.admin, "POST", f"/{dep_id}/webhooks", json={"url": f"http://127.0.0.1:{receiver.port}/hook"}
    )
    assert subscribed.status_code == 201, subscribed.text
    secret = subscribed.json()["secret"]
    assert wait_for(
        lambda: _call(r, keys.admin, "GET", f"/{dep_id}").json()["status"] in ("active", "degraded"), 120
    )
    dep = _call(r, keys.admin, "GET", f"/{dep_id}").json()
    assert dep["status"] == "active", dep["lifecycle"]["history"][-1]
    assert len(twin.droplets) == 1 and len(twin.volumes) == 1 and len(twin.firewalls) == 1
    client = openai.OpenAI(  # the deployment's own OpenAI-compatible endpoint on the gateway
        base_url=f"{r.url}{API}/deployments/{dep_id}", api_key=keys.admin, timeout=60, max_retries=0
    )
    answer = client.chat.completions.create(
        model=SPEC["model_id"], messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    assert answer.usage is not None and answer.usage.completion_tokens > 0

    # -- scaling (min 1, max 3) plus load: the autoscaler grows it, and every replica serves -------------
    bounds = {"min_replicas": 1, "max_replicas": 3, "target_in_flight_per_replica": 1}
    assert _call(r, keys.admin, "PATCH", f"/{dep_id}/scaling", json=bounds).status_code == 202
    assert _status(r, keys.admin, dep_id, "active")
    grew = _grow_under_load(r, client, SPEC["model_id"])
    assert grew, "the autoscaler did not grow the deployment under load"
    assert wait_for(lambda: len(_call(r, keys.admin, "GET", f"/{dep_id}").json()["endpoints"]) > 1, 60), str(
        {
            k: v
            for k, v in _call(r, keys.admin, "GET", f"/{dep_id}").json().items()
            if k in ("status", "replicas", "endpoints", "lifecycle", "job", "scaling")
        }
    )
    dep = _status(r, keys.admin, dep_id, "active")
    replicas = len(dep["endpoints"])
    assert replicas > 1 and len(twin.droplets) == replicas
    for tenant in range(30):  # distinct leading content: the prefix-aware policy spreads them
        client.chat.completions.create(
            model=SPEC["model_id"],
            messages=[{"role": "user", "content": f"tenant {tenant}"}],
            max_tokens=2,
        )
    served = [_prompt_tokens(e) for e in dep["endpoints"]]
    assert all(n > 0 for n in served), served  # every replica served requests

    # -- a droplet deleted behind the system's back: refresh finds it, up recovers -----------------------
    lost = next(iter(twin.droplets))
    requests.delete(f"{url}/v2/droplets/{lost}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert _call(r, keys.admin, "POST", f"/{dep_id}/refresh").status_code == 202
    assert _status(r, keys.admin, dep_id, "degraded")
    assert _call(r, keys.admin, "POST", f"/{dep_id}/up").status_code == 202
    assert len(_status(r, keys.admin, dep_id, "active")["endpoints"]) == replicas

    # -- idle: scale to zero (droplets gone, caches kept), and a request wakes it ------------------------
    zero = {"min_replicas": 0, "max_replicas": 3, "scale_to_zero": True, "idle_timeout_seconds": 60}
    assert _call(r, keys.admin, "PATCH", f"/{dep_id}/scaling", json=zero).status_code == 202
    _status(r, keys.admin, dep_id, "active")
    _idle_for_hours(r)
    assert _status(r, keys.admin, dep_id, "inactive")
    assert twin.droplets == {} and len(twin.volumes) == 3  # a cache per replica slot, kept
    woken = client.chat.completions.create(
        model=SPEC["model_id"], messages=[{"role": "user", "content": "wake"}], max_tokens=2
    )
    assert woken.usage is not None and _status(r, keys.admin, dep_id, "active")

    deleted = _call(r, keys.admin, "DELETE", f"/{dep_id}")
    assert deleted.status_code == 202, deleted.text
    assert wait_for(lambda: _call(r, keys.admin, "GET", f"/{dep_id}").json()["status"] == "inactive", 60)
    assert twin.droplets == {} and len(twin.volumes) == 3  # the caches are kept

    # -- each state change sent its signed webhook, in order ----------------------------------------------
    history = _call(r, keys.admin, "GET", f"/{dep_id}").json()["lifecycle"]["history"]
    settled = [t["to"] for t in history if t["to"] in ("active", "degraded", "inactive")]
    assert wait_for(lambda: len(receiver.received) >= len(settled), 30), (len(receiver.received), settled)
    sent = [json.loads(body) for body, _ in receiver.received]
    assert all(verify(body, h["X-AINative-Signature"], secret) for body, h in receiver.received)
    assert [e["data"]["status"] for e in sent] == settled  # one per settled state, none missing
    kinds = [e["type"].removeprefix("deployment.") for e in sent]
    assert kinds[0] == "active" and kinds[-1] == "inactive", kinds
    assert {"scaled", "degraded", "recovered"} <= set(kinds), (
        kinds
    )  # growth, drift and recovery, zero and wake
    print(f"e2e wall time: {time.monotonic() - started:.1f} s")


def test_an_uploaded_gguf_is_delivered_over_sftp_and_served_by_every_replica(
    system: tuple[Running, Twin, Keys, str], tmp_path: Path
) -> None:
    """A `byom:` deployment made through the API waits for its model (provisioning); the upload is checked,
    sent over SFTP onto the droplet's model-cache volume, the engine restarted on it (`systemctl restart`),
    and `byom:<name>` answers through the gateway. A replica added later gets the same model from the
    control plane after its up, with no second upload."""
    r, twin, keys, _ = system
    spec = {
        "name": "ft",
        "model_id": "byom:my-finetune",
        "gpu_type": "l40s",
        "region": "tor1",
        "preset": "balanced",
    }
    dep_id = _call(r, keys.admin, "POST", "", json=spec).json()["id"]
    assert wait_for(lambda: _call(r, keys.admin, "GET", f"/{dep_id}").json()["job"] is None, 120)
    dep = _call(r, keys.admin, "GET", f"/{dep_id}").json()
    assert dep["status"] == "provisioning" and len(twin.droplets) == 1, dep["lifecycle"]
    gguf = write_tiny_gguf(tmp_path / "finetune.gguf").read_bytes()
    sent = requests.post(
        f"{r.url}{API}/models/upload",
        headers={"Authorization": f"Bearer {keys.admin}"},
        files={"file": ("finetune.gguf", io.BytesIO(gguf), "application/octet-stream")},
        data={"name": "my-model-v1", "deployment_id": dep_id},
        timeout=30,
    )
    assert sent.status_code == 202, sent.text
    upload = f"{r.url}{API}/models/uploads/{sent.json()['id']}"
    auth = {"Authorization": f"Bearer {keys.admin}"}
    assert wait_for(
        lambda: requests.get(upload, headers=auth, timeout=10).json()["status"] != "uploading", 90
    )
    assert requests.get(upload, headers=auth, timeout=10).json()["status"] == "ready"
    assert _status(r, keys.admin, dep_id, "active")
    client = r.openai(keys.admin, timeout=60)
    answer = client.chat.completions.create(
        model="byom:my-model-v1", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert answer.usage is not None and answer.usage.completion_tokens > 0

    scaling = {"min_replicas": 2, "max_replicas": 2}
    assert _call(r, keys.admin, "PATCH", f"/{dep_id}/scaling", json=scaling).status_code == 202
    dep = _status(r, keys.admin, dep_id, "active")
    assert len(dep["endpoints"]) == 2 and len(twin.droplets) == 2
    for endpoint in dep["endpoints"]:  # each replica's engine serves the uploaded file under its name
        models = requests.get(
            f"{endpoint}/models", headers={"Authorization": f"Bearer {ENGINE_KEY}"}, timeout=5
        )
        assert [m["id"] for m in models.json()["data"]] == ["byom:my-model-v1"], models.text
    volumes = list((tmp_path / "droplets" / "volumes").iterdir())
    held = [v / "gguf" / "byom" / "my-model-v1.gguf" for v in volumes]
    assert len(held) == 2 and all(h.read_bytes() == gguf for h in held)  # on each model-cache volume
    sent_at = {h: h.stat().st_mtime_ns for h in held}

    # -- scaled to zero and woken by a request: the volumes still hold the model, only settings are sent ---
    zero = {"min_replicas": 0, "max_replicas": 2, "scale_to_zero": True, "idle_timeout_seconds": 60}
    assert _call(r, keys.admin, "PATCH", f"/{dep_id}/scaling", json=zero).status_code == 202
    _status(r, keys.admin, dep_id, "active")
    _idle_for_hours(r)
    assert _status(r, keys.admin, dep_id, "inactive") and twin.droplets == {}
    woken = client.chat.completions.create(
        model="byom:my-model-v1", messages=[{"role": "user", "content": "again"}], max_tokens=2
    )
    assert woken.usage is not None and len(twin.droplets) >= 1
    assert {h: h.stat().st_mtime_ns for h in held} == sent_at  # not sent again


def test_faults_end_in_clear_states(system: tuple[Running, Twin, Keys, str]) -> None:
    """429s from the API are retried; a droplet that never boots leaves the deployment degraded with its
    reason, and DELETE still works (no stuck record); no capacity names what to do."""
    r, twin, keys, _ = system
    twin.faults.rate_limited = 2  # the next two API calls answer 429 with Retry-After: pydo retries them
    twin.faults.never_boot.add("stuck-0")
    made = _call(r, keys.admin, "POST", "", json={**SPEC, "name": "stuck"})
    dep_id = made.json()["id"]
    dep = _status(r, keys.admin, dep_id, "degraded", timeout_s=180)
    reason = dep["lifecycle"]["history"][-1]["reason"]
    assert reason.startswith("create: secrets not delivered:"), reason
    assert twin.faults.rate_limited == 0 and "429" not in reason  # both 429s were met, and retried
    assert _call(r, keys.admin, "DELETE", f"/{dep_id}").status_code == 202
    _status(r, keys.admin, dep_id, "inactive")
    assert twin.droplets == {}
    twin.faults.unavailable.add(("gpu-h100x1-80gb", "tor1"))
    full = _call(r, keys.admin, "POST", "", json={**SPEC, "name": "no-room"}).json()["id"]
    reason = _status(r, keys.admin, full, "degraded")["lifecycle"]["history"][-1]["reason"]
    assert "Size is not available in this region." in reason and "fallbacks" in reason, reason
    assert "nyc2" in reason  # an alternative: where the catalog also offers this gpu


def _idle_for_hours(r: Running) -> None:
    """The autoscaler's clock an hour, then two, past the last request: idle past any timeout."""
    scaler, now = r.gateway.control.autoscaler, time.time()
    for later in (3600, 7200):
        scaler.clock = lambda later=later: now + later
        r.run(scaler.tick())


def _grow_under_load(r: Running, client: Any, model: str) -> bool:
    """Four streaming clients while the autoscaler ticks: True once it decided to grow."""
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                for _ in client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "go"}], max_tokens=300, stream=True
                ):
                    pass

    load = [threading.Thread(target=stream, daemon=True) for _ in range(4)]
    for t in load:
        t.start()
    scaler = r.gateway.control.autoscaler
    grew = wait_for(lambda: any(a[1] > 1 for a in r.run(scaler.tick())), 30)
    stop.set()
    for t in load:
        t.join(60)
    return grew


def test_the_gitops_path_serves_and_a_later_apply_keeps_the_autoscaled_count(
    system: tuple[Running, Twin, Keys, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same deployment from a stack file in a repository made by `agentcloud init`, applied as the GitOps
    workflow applies it (`agentcloud up --register`): the gateway serves it with no manual step, its
    autoscaler grows it under load (without touching the file: git owns it), and the next apply keeps the
    autoscaled count."""
    from agentcloud.cli import main

    r, twin, keys, url = system
    monkeypatch.delenv("AGENTCLOUD_PROJECT", raising=False)
    assert main(["init", str(tmp_path / "repo")]) == 0
    scaling = {"min_replicas": 1, "max_replicas": 3, "target_in_flight_per_replica": 1}
    stack_file = tmp_path / "repo" / "stacks" / "Pulumi.gitops-8b.yaml"
    stack_file.write_text(
        "# applied by the GitOps workflow\n"
        + yaml.safe_dump(
            {"config": {"agent-cloud:deployment": {**SPEC, "name": "gitops-8b", "scaling": scaling}}}
        )
    )
    in_git = stack_file.read_bytes()
    monkeypatch.chdir(tmp_path / "repo")
    for name, value in {
        "AGENTCLOUD_STACK_OPS": "agentcloud.lifecycle.mocked:from_env",
        "DIGITALOCEAN_API_ENDPOINT": url,
        "DIGITALOCEAN_TOKEN": TOKEN,
        "AGENTCLOUD_SSH_KEY": str(r.gateway.control.config.ssh_key),
        "AGENTCLOUD_URL": r.url,
        "AGENTCLOUD_API_KEY": keys.admin,
    }.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert main(["up", "gitops-8b", "--register"]) == 0
    out = capsys.readouterr().out
    assert "engine secrets delivered to 1 droplet(s)" in out and "registered with the gateway" in out, out
    dep_id = out.split(" as ")[-1].split()[0]
    _status(r, keys.admin, dep_id, "active")
    client = openai.OpenAI(
        base_url=f"{r.url}{API}/deployments/{dep_id}", api_key=keys.admin, timeout=60, max_retries=0
    )
    answer = client.chat.completions.create(
        model=SPEC["model_id"], messages=[{"role": "user", "content": "hello"}], max_tokens=2
    )
    assert answer.usage is not None

    assert _grow_under_load(r, client, SPEC["model_id"]), "the autoscaler did not grow the git stack"
    assert wait_for(lambda: len(_call(r, keys.admin, "GET", f"/{dep_id}").json()["endpoints"]) > 1, 60)
    grown = len(_status(r, keys.admin, dep_id, "active")["endpoints"])
    assert grown > 1 and len(twin.droplets) == grown
    assert stack_file.read_bytes() == in_git  # git's file is never edited
    refused = _call(r, keys.admin, "PATCH", f"/{dep_id}/scaling", json={"min_replicas": 1, "max_replicas": 2})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "owned_by_git", refused.text
    assert _call(r, keys.admin, "DELETE", f"/{dep_id}").status_code == 409

    assert main(["up", "gitops-8b", "--register"]) == 0  # the next merge's apply
    assert len(twin.droplets) == grown  # keeps the autoscaled count
    dep = _status(r, keys.admin, dep_id, "active")
    assert dep["replicas"] == grown and len(dep["endpoints"]) == grown

"""The whole system on the DigitalOcean twin (issue 9), with no manual step: a deployment created through
the management API goes create -> active because the real Pulumi program (under Pulumi's mocks, converged
onto the twin's API through pydo) makes droplets that boot from their user-data in network namespaces, the
control plane pushes the engine's secrets over SFTP (host key pinned), the engine starts (llama.cpp standing
in for the image), and the gateway serves chat through it with the openai SDK; DELETE leaves the twin
without its droplets."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agentcloud.catalog import Catalog
from agentcloud.gateway.routing import RouteTable
from agentcloud.lifecycle.mocked import ProgramOps
from agentcloud.lifecycle.operations import prepare_api_workspace
from agentcloud.store import Store
from agentcloud.tiny_gguf import write_tiny_gguf
from agentcloud.twin.api import Twin, serve_twin
from agentcloud.twin.hosts import Hosts
from tests.gateway.harness import Keys, Running, make_gateway, running, wait_for
from tests.gateway.stand_in_ops import SPEC
from tests.gateway.test_llamacpp import LLAMA_SERVER
from tests.test_twin_hosts import generated_key
from tests.test_twin_hosts import pytestmark as needs_hosts

pytestmark = [pytest.mark.e2e, needs_hosts]

TOKEN = "dop_v1_e2e"
ENGINE_KEY = "engine-key-e2e"
SIZES = [{"slug": "gpu-h100x1-80gb", "available": True, "regions": ["tor1"], "price_hourly": 4.41}]
API = "/api/v1/public"


@pytest.fixture
def system(
    tmp_path: Path, catalog: Catalog, store: Store, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Running, Twin, Keys]]:
    client_private, client_public = generated_key()
    client_key = tmp_path / "gateway_key"
    client_key.write_text(client_private)
    client_key.chmod(0o600)
    hosts = Hosts(
        folder=tmp_path / "droplets",
        authorized_keys=client_public + "\n",
        llama_server=str(LLAMA_SERVER),
        model=str(write_tiny_gguf(tmp_path / "tiny.gguf")),
        prefix=f"ace{os.getpid() % 1000}x",
    )
    twin = Twin(token=TOKEN, sizes=SIZES)
    hosts.attach(twin)
    monkeypatch.setenv("AGENTCLOUD_ENGINE_API_KEY", ENGINE_KEY)  # the data plane's key to the engines
    try:
        with serve_twin(twin) as url:
            workspace = prepare_api_workspace(tmp_path / "api-stacks")
            gateway = make_gateway(
                catalog,
                store,
                RouteTable(),
                tmp_path,
                stack_ops=ProgramOps(workspace, url, TOKEN),
                stacks_dir=workspace,
                engine_api_key=ENGINE_KEY,
                ssh_key=str(client_key),
            )
            with running(gateway) as r:
                yield r, twin, keys
    finally:
        hosts.close()


def _call(r: Running, key: str, method: str, path: str, **kw: Any) -> requests.Response:
    return requests.request(
        method,
        f"{r.url}{API}/deployments{path}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        **kw,
    )


def test_create_to_serving_with_no_manual_step_then_delete(system: tuple[Running, Twin, Keys]) -> None:
    r, twin, keys = system
    started = time.monotonic()
    made = _call(r, keys.admin, "POST", "", json=SPEC)
    assert made.status_code == 202, made.text
    dep_id = made.json()["id"]
    assert wait_for(
        lambda: _call(r, keys.admin, "GET", f"/{dep_id}").json()["status"] in ("active", "degraded"), 120
    )
    dep = _call(r, keys.admin, "GET", f"/{dep_id}").json()
    assert dep["status"] == "active", dep["lifecycle"]["history"][-1]
    assert len(twin.droplets) == 1 and len(twin.volumes) == 1 and len(twin.firewalls) == 1
    import openai

    client = openai.OpenAI(  # the deployment's own OpenAI-compatible endpoint on the gateway
        base_url=f"{r.url}{API}/deployments/{dep_id}", api_key=keys.admin, timeout=60, max_retries=0
    )
    answer = client.chat.completions.create(
        model=SPEC["model_id"], messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    deleted = _call(r, keys.admin, "DELETE", f"/{dep_id}")
    assert deleted.status_code == 202, deleted.text
    assert wait_for(lambda: _call(r, keys.admin, "GET", f"/{dep_id}").json()["status"] == "inactive", 60)
    assert twin.droplets == {} and len(twin.volumes) == 1  # the model cache is kept by default
    print(f"e2e wall time: {time.monotonic() - started:.1f} s")

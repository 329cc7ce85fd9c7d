"""The two planes as separate processes sharing PostgreSQL and Redis, as the gateway stack runs them with
replicas: data-plane processes learn of deployments from the store alone, and stack operations are serialized
per stack across control-plane processes (a store lease), never per process."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests

from agentcloud.catalog import Catalog
from agentcloud.cli import main
from agentcloud.gateway.routing import RouteTable
from agentcloud.store import Store
from tests.gateway.fake_upstream import FakeUpstream
from tests.gateway.harness import PEPPER, Keys, gateway_process, make_gateway, running, seed, wait_for

ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1/public/deployments"
SPEC = {
    "name": "planes-8b",
    "model_id": "llama-3.1-8b-instruct",
    "gpu_type": "h100",
    "region": "tor1",
    "replicas": 1,
    "preset": "speed",
}


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str, redis_url: str, upstream: FakeUpstream) -> Iterator[dict[str, Any]]:
    store = Store(pg_url)
    keys = seed(store, requests_per_minute=100_000)  # this test is not about limits
    store.close()
    stacks, logs = tmp_path / "stacks", tmp_path / "logs"
    stacks.mkdir()
    logs.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AGENTCLOUD_DATABASE": pg_url,
        "AGENTCLOUD_REDIS_URL": redis_url,
        "AGENTCLOUD_KEY_PEPPER": PEPPER.decode(),
        "AGENTCLOUD_STACK_OPS": "tests.gateway.stand_in_ops:from_env",
        "AGENTCLOUD_STACKS_DIR": str(stacks),
        "AGENTCLOUD_UPLOAD_DIR": str(tmp_path / "uploads"),
        "FAKE_ENGINE_PORT": upstream.base_url.split(":")[2].split("/")[0],
        "FAKE_OPS_DELAY_S": "3",
        "FAKE_OPS_LOG": str(tmp_path / "ops.jsonl"),
    }
    with ExitStack() as stack:
        urls = {
            name: stack.enter_context(gateway_process(plane, env, logs)).url
            for name, plane in (
                ("data1", "data"),
                ("data2", "data"),
                ("control1", "control"),
                ("control2", "control"),
            )
        }
        yield {"urls": urls, "keys": keys, "ops_log": tmp_path / "ops.jsonl"}
    for log in sorted(logs.glob("*.log")):  # shown by pytest when the test failed: what each process said
        print(f"--- {log.name}\n{log.read_text()[-2000:]}")


def _call(url: str, method: str, path: str, key: str, **kw: Any) -> requests.Response:
    return requests.request(
        method, f"{url}{API}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=30, **kw
    )


def _chat(url: str, dep_id: str, key: str) -> int:
    return requests.post(
        f"{url}{API}/{dep_id}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"messages": [{"role": "user", "content": "hi"}]},
        timeout=15,
    ).status_code


def _operations(log: Path) -> list[tuple[float, float, str]]:
    """(start, end, operation) of every stack operation, from the stand-in's log."""
    events = [json.loads(line) for line in log.read_text().splitlines()]
    starts = [e for e in events if e["event"] == "start"]
    ends = [e for e in events if e["event"] == "end"]
    return [(s["at"], e["at"], s["op"]) for s, e in zip(starts, ends, strict=True)]


def test_two_data_planes_learn_routes_and_operations_are_serialized(cluster: dict[str, Any]) -> None:
    urls, keys = cluster["urls"], cluster["keys"]
    assert isinstance(keys, Keys)
    # Data planes do not serve the management API; control planes do not serve inference.
    assert _call(urls["data1"], "POST", "", keys.admin, json=SPEC).status_code == 404
    created = _call(urls["control1"], "POST", "", keys.admin, json=SPEC)
    assert created.status_code == 202, created.text
    dep_id = created.json()["id"]
    assert wait_for(
        lambda: _call(urls["control1"], "GET", f"/{dep_id}", keys.admin).json()["status"] == "active", 30
    )
    active_at = time.monotonic()
    served: dict[str, float] = {}
    while len(served) < 2 and time.monotonic() - active_at < 5:
        for name in ("data1", "data2"):
            if name not in served and _chat(urls[name], dep_id, keys.standard) == 200:
                served[name] = time.monotonic() - active_at
        time.sleep(0.05)
    assert set(served) == {"data1", "data2"}, served
    assert max(served.values()) <= 2.0, f"seconds from active to serving: {served}"
    print(f"seconds from active to serving on each data plane: {served}")
    assert _chat(urls["control1"], dep_id, keys.standard) == 404  # no inference routes there

    # Two scaling requests at once, to two control-plane processes: one operation runs, the other is told so.
    answers: dict[str, requests.Response] = {}
    barrier = threading.Barrier(2)

    def scale(name: str, replicas: int) -> None:
        barrier.wait()
        answers[name] = _call(
            urls[name],
            "PATCH",
            f"/{dep_id}/scaling",
            keys.admin,
            json={"min_replicas": replicas, "max_replicas": 3},
        )

    threads = [threading.Thread(target=scale, args=(n, r)) for n, r in (("control1", 2), ("control2", 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(r.status_code for r in answers.values())
    assert codes == [202, 409], {n: r.text for n, r in answers.items()}
    busy = next(r for r in answers.values() if r.status_code == 409)
    assert busy.json()["error"]["code"] == "operation_in_progress"
    # While it runs, every control plane shows the job (it lives in the store).
    job = _call(urls["control2"], "GET", f"/{dep_id}", keys.admin).json()["job"]
    assert job is not None and job["operation"] == "scale"
    seen: list[Any] = []

    def job_done() -> bool:
        seen.append(_call(urls["control2"], "GET", f"/{dep_id}", keys.admin).json())
        return "job" in seen[-1] and seen[-1]["job"] is None

    assert wait_for(job_done, 30), seen[-3:]
    assert all("job" in d for d in seen), [d for d in seen if "job" not in d]  # never an error meanwhile
    operations = _operations(cluster["ops_log"])
    assert len(operations) == 2, operations  # the create's up and one scale's up
    for (_, end, _), (start, _, _) in itertools.pairwise(operations):
        assert start >= end, f"stack operations overlapped: {operations}"
    dep = _call(urls["control2"], "GET", f"/{dep_id}", keys.admin).json()
    assert dep["status"] == "active" and len(dep["endpoints"]) in (2, 3)
    assert wait_for(lambda: _chat(urls["data2"], dep_id, keys.standard) == 200, 5)


def test_a_route_added_by_the_cli_serves_without_a_restart(
    tmp_path: Path, catalog: Catalog, upstream: FakeUpstream
) -> None:
    """`agentcloud gateway routes add` writes the store; a running gateway serves the route within 2 s."""
    db = str(tmp_path / "gw.sqlite3")
    store = Store(db)
    keys = seed(store, requests_per_minute=100_000)
    with running(make_gateway(catalog, store, RouteTable(), tmp_path)) as r:
        chat = f"{r.url}{API}/dep_cli/chat/completions"

        def status() -> int:
            return requests.post(
                chat,
                headers={"Authorization": f"Bearer {keys.admin}"},
                timeout=10,
                json={"messages": [{"role": "user", "content": "hi"}]},
            ).status_code

        assert status() == 404
        added = [
            "gateway",
            "--database",
            db,
            "routes",
            "add",
            "--id",
            "dep_cli",
            "--org",
            "org_a",
            "--model",
            "llama-3.1-8b-instruct",
            "--endpoint",
            upstream.base_url,
        ]
        assert main(added) == 0
        started = time.monotonic()
        assert wait_for(lambda: status() == 200, 5)
        assert time.monotonic() - started <= 2.0

"""Metrics a platform team can read (issue 13): every answer counted by route and status (401, 403, 404 and
429 included), and every series of a histogram with the same buckets, so `sum by (le)` works across them."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from agentcloud.catalog import Catalog
from agentcloud.store import Store, UsageRow
from tests.gateway.harness import CHAT_MODEL, Keys, Running, wait_for

CHAT: dict[str, Any] = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}


def _metrics(gw: Running) -> str:
    resp = requests.get(f"{gw.url}/metrics", timeout=10)
    assert resp.status_code == 200
    return resp.text


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_every_answer_is_counted_by_route_and_status(gw: Running, keys: Keys) -> None:
    h = {"Authorization": f"Bearer {keys.standard}"}
    assert requests.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=h, timeout=10).status_code == 200
    bad = {"Authorization": "Bearer ak_live_nope"}
    assert (
        requests.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=bad, timeout=10).status_code == 401
    )
    scoped = {"Authorization": f"Bearer {keys.scoped}"}
    assert (
        requests.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=scoped, timeout=10).status_code
        == 403
    )
    assert requests.get(f"{gw.url}/v1/nothing", headers=h, timeout=10).status_code == 404
    statuses = [
        requests.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=h, timeout=10).status_code
        for _ in range(12)  # the free plan allows 10 a minute
    ]
    assert 429 in statuses
    text = _metrics(gw)
    name = "agentcloud_http_requests_total"
    route = "/v1/chat/completions"
    assert _sample(text, name, method="POST", route=route, status="200") == statuses.count(200) + 1
    assert _sample(text, name, method="POST", route=route, status="401") == 1
    assert _sample(text, name, method="POST", route=route, status="403") == 1
    assert _sample(text, name, method="POST", route=route, status="429") == statuses.count(429)
    assert _sample(text, name, method="GET", route="unmatched", status="404") == 1
    model = "agentcloud_model_responses_total"  # and per model (the calls that reached one)
    assert _sample(text, model, model=CHAT_MODEL, status="200") == statuses.count(200) + 1


def test_histograms_have_the_same_buckets_in_every_series(gw: Running, keys: Keys) -> None:
    h = {"Authorization": f"Bearer {keys.admin}"}
    for path in ("/v1/chat/completions", "/api/v1/public/deployments/dep_a/chat/completions"):
        assert requests.post(gw.url + path, json=CHAT, headers=h, timeout=10).status_code == 200
    text = _metrics(gw)
    for metric in ("latency_seconds", "ttft_seconds"):
        buckets: dict[str, list[str]] = {}
        for line in text.splitlines():
            m = re.match(
                rf'agentcloud_(model|deployment)_{metric}_bucket\{{(\w+)="([^"]+)",le="([^"]+)"\}} (\d+)',
                line,
            )
            if m:
                buckets.setdefault(f"{m[1]}:{m[3]}", []).append(m[4])
        assert len(buckets) >= 2, buckets.keys()  # the model's series and the deployment's
        bounds = list(buckets.values())
        assert all(b == bounds[0] for b in bounds) and bounds[0][-1] == "+Inf", buckets
        assert len(bounds[0]) > 10


def test_usage_over_a_window_comes_from_the_store(gw: Running, keys: Keys, store: Store) -> None:
    """Per model, per key and per deployment, with latency percentiles, for 1h / 24h / 7d / 30d: from the
    store alone (what another replica, or this one after a restart, answers the same)."""
    h = {"Authorization": f"Bearer {keys.admin}"}
    for path in ("/v1/chat/completions",) * 3 + ("/api/v1/public/deployments/dep_a/chat/completions",) * 2:
        assert requests.post(gw.url + path, json=CHAT, headers=h, timeout=10).status_code == 200
    two_hours_ago = time.time() // 60 * 60 - 7200
    store.add_usage(
        [UsageRow(two_hours_ago, keys.ids["admin"], "org_a", CHAT_MODEL, None, 7, 1, 70, 7, 0.5, 700.0)]
    )
    url = f"{gw.url}/api/v1/public/inference/metrics"

    def window(w: str) -> dict[str, Any]:
        resp = requests.get(url, params={"window": w}, headers=h, timeout=10)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    assert wait_for(lambda: window("1h")["models"].get(CHAT_MODEL, {}).get("requests") == 5, 5)
    hour = window("1h")
    model = hour["models"][CHAT_MODEL]
    assert model["errors"] == 0 and model["latency_ms"]["p50"] is not None
    assert model["latency_ms"]["p50"] <= model["latency_ms"]["p99"]
    assert hour["keys"][keys.ids["admin"]]["requests"] == 5
    assert hour["deployments"]["dep_a"]["requests"] == 2
    day = window("24h")
    assert day["models"][CHAT_MODEL]["requests"] == 12 and day["models"][CHAT_MODEL]["errors"] == 1
    bad = requests.get(url, params={"window": "2y"}, headers=h, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "window"
    other = requests.get(url, headers={"Authorization": f"Bearer {keys.other_org}"}, timeout=10).json()
    assert other["models"] == {} and other["keys"] == {}, "another org sees none of it"


def test_capacity_cost_per_deployment_per_mtok_and_per_key(catalog: Catalog, tmp_path: Path) -> None:
    """A deployment made through the API costs its GPU droplets' price while replicas run, nothing at zero;
    over a window, per 1M tokens, and attributed to the keys (and orgs) that used it by their tokens."""
    from tests.gateway.harness import API, world_of

    with world_of(catalog, tmp_path) as w:
        dep = w.admin("GET", f"{API}/deployments/{w.dep_m}").json()
        rate = dep["cost"]["rate_usd_per_hour"]
        assert rate == pytest.approx(catalog.gpu_types["h100"].hourly_usd), dep["cost"]
        chat = f"{API}/deployments/{w.dep_m}/chat/completions"
        for key, n in ((w.keys.admin, 3), (w.keys.member, 1)):  # org_a's admin, and a member from org_b
            for _ in range(n):
                assert w.call("POST", chat, key, json=CHAT).status_code == 200
        time.sleep(1.2)
        w.r.run(w.r.gateway.data.accountant.flush())
        cost = w.admin("GET", f"{API}/deployments/{w.dep_m}/cost", params={"window": "1h"}).json()
        assert cost["tokens"] > 0 and cost["cost_usd"] > 0 and cost["usd_per_mtok"] > 0
        assert cost["usd_per_mtok"] == pytest.approx(cost["cost_usd"] / cost["tokens"] * 1e6, rel=1e-3)
        shares = {k: v["share"] for k, v in cost["by_key"].items()}
        assert shares[w.keys.ids["admin"]] == pytest.approx(0.75, abs=0.01), shares
        assert set(cost["by_org"]) == {"org_a", "org_b"}
        assert sum(o["cost_usd"] for o in cost["by_org"].values()) == pytest.approx(
            cost["cost_usd"], rel=1e-3
        )
        usage = w.admin("GET", f"{API}/inference/metrics", params={"window": "1h"}).json()
        mine = usage["capacity"][w.dep_m]  # the usage API has the org's capacity too
        assert mine["rate_usd_per_hour"] == rate and mine["cost_usd"] > 0 and mine["usd_per_mtok"] > 0
        scraped = requests.get(f"{w.r.url}/metrics", timeout=10).text
        assert _sample(scraped, "agentcloud_deployment_capacity_usd_per_hour", deployment=w.dep_m) == rate, [
            line for line in scraped.splitlines() if "capacity" in line
        ]
        assert w.admin("DELETE", f"{API}/deployments/{w.dep_m}").status_code == 202
        w.settled()
        gone = w.admin("GET", f"{API}/deployments/{w.dep_m}").json()["cost"]
        assert gone["rate_usd_per_hour"] == 0.0 and gone["to_date_usd"] > 0
        later = w.admin("GET", f"{API}/deployments/{w.dep_m}/cost").json()["to_date_usd"]
        time.sleep(0.3)
        assert w.admin("GET", f"{API}/deployments/{w.dep_m}/cost").json()["to_date_usd"] == later, (
            "nothing at zero"
        )


def test_replicas_circuits_and_the_outbox_are_visible(gw: Running, keys: Keys, store: Store) -> None:
    text = _metrics(gw)
    assert _sample(text, "agentcloud_replica_in_flight", deployment="dep_a", replica="0") == 0
    assert _sample(text, "agentcloud_replica_up", deployment="dep_a", replica="0") == 1
    assert _sample(text, "agentcloud_webhook_outbox_pending") is None  # no labels: a bare sample
    assert "agentcloud_webhook_outbox_pending 0" in text
    store.create_webhook("whk_1", "org_a", "dep_a", "https://127.0.0.1/h", ["deployment.scaled"], "sealed")
    store.enqueue([("out_1", "whk_1", "evt_1", "{}")], time.time() - 120)
    text = _metrics(gw)
    assert "agentcloud_webhook_outbox_pending 1" in text
    age = float(
        next(
            line for line in text.splitlines() if line.startswith("agentcloud_webhook_outbox_oldest")
        ).split()[1]
    )
    assert 110 <= age <= 200
    breaker = gw.gateway.routes.breakers.by_url
    assert all(f'agentcloud_upstream_circuit_open{{upstream="{url}"}} 0' in text for url in breaker)


OBSERVABILITY = Path(__file__).resolve().parents[2] / "observability"


def test_the_dashboard_and_alerts_use_only_metrics_the_gateway_exports(gw: Running, keys: Keys) -> None:
    """Every metric the Grafana dashboard and the alert rules query is one /metrics really exports (after
    traffic through a deployment), the rules are well formed, and the dashboard is what dashboard.py
    writes."""
    import json
    import runpy

    import yaml

    h = {"Authorization": f"Bearer {keys.admin}"}
    for path in ("/v1/chat/completions", "/api/v1/public/deployments/dep_a/chat/completions"):
        assert requests.post(gw.url + path, json=CHAT, headers=h, timeout=10).status_code == 200
    exported = set(re.findall(r"^# TYPE (agentcloud_\w+) ", _metrics(gw), re.M))
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    exprs = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule), rule
            assert re.fullmatch(r"\d+[smh]", rule["for"]) and rule["labels"]["severity"] in ("page", "ticket")
            exprs.append(rule["expr"])
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    generated = runpy.run_path(str(OBSERVABILITY / "dashboard.py"))["dashboard"]()
    assert dashboard == json.loads(json.dumps(generated)), "run python observability/dashboard.py"
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {re.sub(r"_bucket$", "", m) for e in exprs for m in re.findall(r"agentcloud_\w+", e)}
    assert used and used <= exported, used - exported


def test_sla_breaches_are_exported_from_the_store(gw: Running, store: Store) -> None:
    store.add_sla_event("dep_a", {"event": "breach", "metric": "ttft_p95_ms", "at": time.time()})
    text = _metrics(gw)
    assert _sample(text, "agentcloud_deployment_sla_breaches_total", deployment="dep_a") == 1
    assert _sample(text, "agentcloud_deployment_sla_breached", deployment="dep_a", metric="ttft_p95_ms") == 1
    store.add_sla_event("dep_a", {"event": "recovered", "metric": "ttft_p95_ms", "at": time.time()})
    text = _metrics(gw)
    assert _sample(text, "agentcloud_deployment_sla_breached", deployment="dep_a") is None
    assert _sample(text, "agentcloud_deployment_sla_breaches_total", deployment="dep_a") == 1


def test_two_replicas_for_90_seconds_cost_what_the_catalog_says(
    catalog: Catalog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bar of issue 13: a deployment that ran 2 replicas for 90 s, then 0, cost 2 x 90 s x $/h / 3600,
    within a cent, through the API and the CLI (the meter's clock is moved, not waited for)."""
    from agentcloud.cli import main
    from tests.gateway.harness import API, world_of
    from tests.gateway.stand_in_ops import SPEC

    with world_of(catalog, tmp_path) as w:
        now = [time.time() - 3600]  # an hour ago: the API reads the meter up to the real now
        w.r.gateway.control.deployments.clock = lambda: now[0]
        made = w.admin("POST", f"{API}/deployments", json={**SPEC, "name": "two", "replicas": 2})
        assert made.status_code == 202, made.text
        dep_id = made.json()["id"]
        assert wait_for(
            lambda: w.admin("GET", f"{API}/deployments/{dep_id}").json()["status"] == "active", 15
        )
        now[0] += 90
        assert w.admin("DELETE", f"{API}/deployments/{dep_id}").status_code == 202
        assert wait_for(
            lambda: w.admin("GET", f"{API}/deployments/{dep_id}").json()["status"] == "inactive", 15
        )
        expected = 2 * 90 * catalog.gpu_types["h100"].hourly_usd / 3600
        cost = w.admin("GET", f"{API}/deployments/{dep_id}/cost", params={"window": "30d"}).json()
        assert abs(cost["to_date_usd"] - expected) < 0.01, (cost, expected)
        assert cost["rate_usd_per_hour"] == 0.0
        assert main(["deployments", "--url", w.r.url, "--key", w.keys.admin, "cost", dep_id]) == 0
        out = capsys.readouterr().out
        assert f"${expected:.2f} to date" in out, out


def test_each_metric_family_is_one_group_and_replicas_have_their_own_ttft(gw: Running, keys: Keys) -> None:
    h = {"Authorization": f"Bearer {keys.admin}"}
    chat = "/api/v1/public/deployments/dep_a/chat/completions"
    assert requests.post(gw.url + chat, json=CHAT, headers=h, timeout=10).status_code == 200
    text = _metrics(gw)
    assert _sample(text, "agentcloud_replica_requests_total", deployment="dep_a", replica="0") == 1
    assert _sample(text, "agentcloud_replica_ttft_seconds_count", deployment="dep_a", replica="0") == 1
    seen: list[str] = []  # the families in the order their samples appear: each must be one contiguous run
    for line in text.splitlines():
        if line and not line.startswith("#"):
            family = re.sub(r"(_bucket|_sum|_count)$", "", line.split("{")[0].split(" ")[0])
            if not seen or seen[-1] != family:
                assert family not in seen, f"{family} is split in two groups"
                seen.append(family)

"""A real Prometheus scrapes a real gateway under load (issue 13): `promtool check rules` and `promtool check
metrics` pass, and every expression of the Grafana dashboard and of the alert rules returns data. (An alert's
expression is queried without its threshold: the signal must be there, whether or not it fires.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from agentcloud.catalog import Catalog
from agentcloud.gateway.routing import Deployment
from tests.gateway.harness import API, CHAT_MODEL, PEPPER, World, record_of, target, wait_for, world_of
from tests.services import prometheus_server

OBSERVABILITY = Path(__file__).resolve().parents[2] / "observability"
TOKEN = "scrape-token-0123456789"
CHAT: dict[str, Any] = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}


def _expressions() -> list[str]:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    signals = [
        re.sub(r"\s*(>|<|==|>=|<=)\s*[0-9.e-]+\s*$", "", rule["expr"].strip())
        for group in rules["groups"]
        for rule in group["rules"]
    ]
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    return signals + [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def _load(w: World, free: str, stop: threading.Event) -> None:
    """Traffic while Prometheus scrapes: public and deployment chats, and a plan's 429s; and, injected (a real
    wake or autoscaler decision takes a stack operation: their own tests are in test_deployments_api), wakes
    and scaling decisions."""
    metrics, store = w.r.gateway.metrics, w.r.gateway.store
    while not stop.is_set():
        metrics.woke(w.dep_m, 40.0, True)
        metrics.woke(w.dep_m, 30.0, False)
        store.add_scaling_event(w.dep_m, time.time(), 1, 2, "scale up: queue")
        w.call("POST", "/v1/chat/completions", w.keys.admin, json=CHAT)
        w.call("POST", f"{API}/deployments/{w.dep_m}/chat/completions", w.keys.admin, json=CHAT)
        w.call("POST", "/v1/chat/completions", free, json=CHAT)
        time.sleep(0.05)


def test_prometheus_scrapes_and_every_dashboard_and_alert_expression_has_data(
    catalog: Catalog, tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (scripts/setup.sh installs prometheus)")
    rules = OBSERVABILITY / "alerts.yml"
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    with world_of(catalog, tmp_path, metrics_token=TOKEN) as w:
        store = w.r.gateway.store
        # a replica that is down (nothing listens on port 9), an SLA breach on record
        down = Deployment(
            "dep_down", "org_a", "dep_down", CHAT_MODEL, (target("http://127.0.0.1:9/v1", "down"),)
        )
        store.save_deployment(record_of(down))
        store.add_sla_event(w.dep_m, {"event": "breach", "metric": "ttft_p95_ms", "at": time.time()})
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        port = w.r.url.rsplit(":", 1)[1]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "agentcloud-gateway",
                    "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                    "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                }
            ],
        }
        with prometheus_server(yaml.safe_dump(config), str(tmp_path)) as prom:
            stop = threading.Event()
            _, free = store.create_key(PEPPER, "org_a", "free", "free")  # 10 requests a minute, then 429
            loader = threading.Thread(target=_load, args=(w, free, stop))
            loader.start()
            try:
                time.sleep(4)  # a few scrapes with traffic in between
                for _ in range(6):  # an upstream that fails: 5xx answers, then its circuit opens
                    fault = {**CHAT, "messages": [{"role": "user", "content": "[[fault=500]]"}]}
                    w.call("POST", f"{API}/deployments/{w.dep_m}/chat/completions", w.keys.admin, json=fault)
                time.sleep(3)
            finally:
                stop.set()
                loader.join(10)

            def query(expr: str) -> list[Any]:
                answer = requests.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
                assert answer["status"] == "success", (expr, answer)
                return list(answer["data"]["result"])

            assert wait_for(lambda: bool(query('up{job="agentcloud-gateway"} == 1')), 10), "not scraped"
            empty = [expr for expr in _expressions() if not query(expr)]
            assert not empty, "expressions without data:\n" + "\n".join(empty)
        scraped = requests.get(f"{w.r.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=scraped.text, capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr

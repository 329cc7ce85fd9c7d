"""Metrics a platform team can read (issue 13): every answer counted by route and status (401, 403, 404 and
429 included), and every series of a histogram with the same buckets, so `sum by (le)` works across them."""

from __future__ import annotations

import re
from typing import Any

import requests

from tests.gateway.harness import CHAT_MODEL, Keys, Running

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

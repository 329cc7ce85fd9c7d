"""Writes grafana-dashboard.json (run: python observability/dashboard.py). The panels are listed here, once;
the JSON is what Grafana imports (Dashboards -> Import), with the Prometheus data source chosen at import."""

from __future__ import annotations

import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    # (title, unit, [(PromQL, legend)])
    (
        "Requests by status",
        "reqps",
        [("sum by (status) (rate(agentcloud_http_requests_total[5m]))", "{{status}}")],
    ),
    (
        "Errors and refusals",
        "percentunit",
        [
            (
                'sum(rate(agentcloud_http_requests_total{status=~"5.."}[5m])) '
                "/ clamp_min(sum(rate(agentcloud_http_requests_total[5m])), 1e-9)",
                "5xx share",
            ),
            (
                'sum(rate(agentcloud_http_requests_total{status="429"}[5m])) '
                "/ clamp_min(sum(rate(agentcloud_http_requests_total[5m])), 1e-9)",
                "429 share",
            ),
        ],
    ),
    (
        "Latency p50 / p95 by model",
        "s",
        [
            (
                f"histogram_quantile({q}, sum by (le, model) "
                "(rate(agentcloud_model_latency_seconds_bucket[5m])))",
                f"p{p} {{{{model}}}}",
            )
            for q, p in ((0.5, 50), (0.95, 95))
        ],
    ),
    (
        "Time to first token p95 by deployment",
        "s",
        [
            (
                "histogram_quantile(0.95, sum by (le, deployment) "
                "(rate(agentcloud_deployment_ttft_seconds_bucket[5m])))",
                "{{deployment}}",
            )
        ],
    ),
    (
        "Tokens per second by model",
        "short",
        [
            ("sum by (model) (rate(agentcloud_model_completion_tokens_total[5m]))", "out {{model}}"),
            ("sum by (model) (rate(agentcloud_model_prompt_tokens_total[5m]))", "in {{model}}"),
        ],
    ),
    (
        "Requests in flight by deployment",
        "short",
        [("sum by (deployment) (agentcloud_deployment_active_requests)", "{{deployment}}")],
    ),
    (
        "Replicas: in flight and engine queue",
        "short",
        [
            (
                "sum by (deployment, replica) (agentcloud_replica_in_flight)",
                "in flight {{deployment}}#{{replica}}",
            ),
            ("max by (deployment, replica) (agentcloud_replica_queue)", "queue {{deployment}}#{{replica}}"),
        ],
    ),
    ("Replicas down", "short", [("sum by (deployment) (1 - agentcloud_replica_up)", "{{deployment}}")]),
    ("Open circuits", "short", [("max by (upstream) (agentcloud_upstream_circuit_open)", "{{upstream}}")]),
    (
        "Webhook outbox",
        "short",
        [
            ("max(agentcloud_webhook_outbox_pending)", "pending"),
            ("max(agentcloud_webhook_outbox_oldest_age_seconds)", "oldest (s)"),
        ],
    ),
    (
        "Provider cost ($/h)",
        "currencyUSD",
        [("sum by (model) (rate(agentcloud_model_cost_usd_total[1h])) * 3600", "{{model}}")],
    ),
]


def dashboard() -> dict[str, object]:
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": DS,
                "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(65 + j), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for j, (expr, legend) in enumerate(targets)
                ],
            }
        )
    return {
        "__inputs": [
            {"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus"}
        ],
        "title": "agentcloud gateway",
        "uid": "agentcloud-gateway",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "tags": ["agentcloud"],
        "panels": panels,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("grafana-dashboard.json")
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {out}")

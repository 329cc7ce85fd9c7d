"""The console (issue 13): served by the gateway as three static files; headless Chromium (the Debian
package) opens it with an admin key and the charts render with data, the deployments show status, replicas
and cost, and the SLA breaches are listed. `AGENTCLOUD_SCREENSHOT=docs/console.png` also writes the
screenshot in docs."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agentcloud.catalog import Catalog
from agentcloud.store import UsageRow
from agentcloud.store.store import LATENCY_BOUNDS_MS
from tests.gateway.harness import API, CHAT_MODEL, wait_for, world_of

CHAT: dict[str, Any] = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium not installed (scripts/setup.sh installs it)")


def _browse(chromium: str, url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",  # tests may run as root
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp / 'profile'}",
            "--virtual-time-budget=15000",
            "--window-size=1280,1100",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_console_shows_deployments_charts_and_breaches(catalog: Catalog, tmp_path: Path) -> None:
    chromium = _chromium()
    with world_of(catalog, tmp_path) as w:
        for _ in range(12):
            assert w.call("POST", "/v1/chat/completions", w.keys.admin, json=CHAT).status_code == 200
            chat = f"{API}/deployments/{w.dep_m}/chat/completions"
            assert w.call("POST", chat, w.keys.admin, json=CHAT).status_code == 200
        w.r.gateway.store.add_sla_event(
            w.dep_m,
            {
                "event": "breach",
                "metric": "ttft_p95_ms",
                "value": 2400.0,
                "target": 2000.0,
                "at": time.time(),
            },
        )
        # the hour before, as gateways would have written it: a day's shape, for the charts (and the picture)
        store, now = w.r.gateway.store, time.time() // 60 * 60
        history = []
        for minute in range(1, 60):
            n = 20 + int(15 * math.sin(minute / 9))
            hist = [0] * (len(LATENCY_BOUNDS_MS) + 1)
            hist[18 + minute % 5], hist[24] = n - 2, 2  # most around 60-150 ms, a slow tail near 200 ms
            history.append(
                UsageRow(
                    now - minute * 60,
                    w.keys.ids["admin"],
                    "org_a",
                    CHAT_MODEL,
                    w.dep_m,
                    n,
                    minute % 17 == 0,
                    n * 90,
                    n * 40,
                    0.0,
                    n * 95.0,
                    tuple(hist),
                )
            )
        store.add_usage(history)
        w.r.run(w.r.gateway.data.accountant.flush())
        assert wait_for(lambda: w.admin("GET", f"{API}/inference/metrics").json()["models"], 5)
        url = f"{w.r.url}/console#key={w.keys.admin}&window=1h"
        page = _browse(chromium, url, tmp_path, "--dump-dom")
        dom = page.stdout
        assert 'data-ready="1"' in dom, (page.stderr[-2000:], dom[:2000])
        for chart in ("requests", "latency", "tokens"):
            m = re.search(rf'id="chart-{chart}"[^>]*data-nonzero="(\d+)"', dom)
            assert m and int(m[1]) > 0, f"chart {chart} has no data"
            assert re.search(rf'id="chart-{chart}".*?<polyline points="[^"]+,[^"]+ ', dom, re.S)
        assert "api-8b" in dom and "active" in dom, "the deployment, its status"
        assert re.search(r"\$\d+\.\d\d</td>", dom), "a cost column"
        assert "breached: ttft_p95_ms" in dom and "ttft_p95_ms 2400 over 2000" in dom
        shot = Path(os.environ.get("AGENTCLOUD_SCREENSHOT") or tmp_path / "console.png").resolve()
        _browse(chromium, url, tmp_path, f"--screenshot={shot}")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

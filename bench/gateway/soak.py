"""Memory soak: one gateway process (auth, limits, metrics on) serves 100k requests from wrk through to a fast
fake upstream; its RSS is sampled after a 10k warm-up and at the end. Target: flat within 10%.

    .venv/bin/python bench/gateway/soak.py [--requests 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
HARNESS = Path(os.environ.get("HARNESS", ROOT.parent / "shared" / "bench" / "proxy"))
BENCH_PY = Path(os.environ.get("BENCH_VENV", Path.home() / ".cache/agentcloud/bench-venv")) / "bin" / "python"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wrk(url: str, key: str, requests_n: int, script_dir: Path) -> None:
    lua = script_dir / "post.lua"
    body = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
    lua.write_text(
        f"wrk.method = 'POST'\nwrk.body = '{body}'\nwrk.headers['Content-Type'] = 'application/json'\n"
        f"wrk.headers['Authorization'] = 'Bearer {key}'\n"
    )
    done = 0
    while done < requests_n:  # wrk runs by duration: repeat short runs until the count is reached
        out = subprocess.run(
            ["wrk", "-t1", "-c64", "-d5s", "-s", str(lua), url], capture_output=True, text=True, check=True
        ).stdout
        done += int(next(line for line in out.splitlines() if "requests in" in line).split()[0])
    print(f"  sent {done} requests")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp())
    env = {
        **os.environ,
        "AGENTCLOUD_DATABASE": str(work / "gw.sqlite3"),
        "AGENTCLOUD_KEY_PEPPER": "soak",
        "AGENTCLOUD_UPLOAD_DIR": str(work / "models"),
    }
    ac = str(ROOT / ".venv/bin/agentcloud")
    subprocess.run(
        [ac, "gateway", "orgs", "create", "soak", "--id", "org_soak"],
        env=env,
        check=True,
        capture_output=True,
    )
    key = json.loads(
        subprocess.run(
            [
                ac,
                "gateway",
                "keys",
                "create",
                "--org",
                "org_soak",
                "--plan",
                "enterprise",
                "--rpm",
                "1000000000",
                "--tpm",
                "1000000000",
                "--json",
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )["key"]
    upstream = subprocess.Popen(
        [
            str(BENCH_PY if BENCH_PY.exists() else sys.executable),
            str(HARNESS / "fake_upstream.py"),
            "--port",
            "18095",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gateway = subprocess.Popen(
        [
            ac,
            "gateway",
            "serve",
            "--port",
            "4095",
            "--upstream",
            "http://127.0.0.1:18095/v1",
            "--model",
            "fake-model",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                if requests.get("http://127.0.0.1:4095/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        url = "http://127.0.0.1:4095/v1/chat/completions"
        print(f"start: RSS {rss_mib(gateway.pid):.1f} MiB")
        wrk(url, key, 10_000, work)
        warm = rss_mib(gateway.pid)
        print(f"after 10k warm-up: RSS {warm:.1f} MiB")
        step = args.requests // 4
        for i in range(1, 5):
            wrk(url, key, step, work)
            print(f"after {i * step} more: RSS {rss_mib(gateway.pid):.1f} MiB")
        end = rss_mib(gateway.pid)
        growth = (end - warm) / warm * 100
        print(
            f"after {args.requests} more: RSS {end:.1f} MiB ({growth:+.1f}% since warm-up; target within 10%)"
        )
        sys.exit(0 if abs(growth) <= 10 else 1)
    finally:
        gateway.terminate()
        upstream.terminate()
        gateway.wait(10)
        upstream.wait(10)


if __name__ == "__main__":
    main()

"""The README's no-cloud path, run as written: its "try-locally" block is executed by bash in an empty folder
(only the two port numbers are swapped for free ones), with the installed `agentcloud` and the llama-server
that setup builds on PATH. If the README's commands stop working, this fails."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.gateway.test_llamacpp import LLAMA_SERVER
from tests.sshd import free_port


def readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"<!-- {marker}")
    match = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert match is not None, f"no bash block after the {marker} marker"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_local_engine_path_runs_as_written(tmp_path: Path) -> None:
    if not LLAMA_SERVER.exists():
        pytest.skip(
            f"llama-server not built at {LLAMA_SERVER}: run scripts/build-llama-server.sh (setup does)"
        )
    block = readme_block("try-locally")
    engine, gateway = free_port(), free_port()
    script = block.replace("8000", str(engine)).replace("8080", str(gateway))
    assert script.count(str(engine)) == 2 and script.count(str(gateway)) == 2, (
        "the ports the README uses moved"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCLOUD_")}
    env["PATH"] = f"{LLAMA_SERVER.parent}:{Path(sys.executable).parent}:{env['PATH']}"
    out = tmp_path / "stdout"
    with out.open("w") as stdout:
        done = subprocess.run(
            ["bash", "-c", f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}"],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            timeout=180,
            check=False,
        )
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in tmp_path.glob("*.log"))
    assert done.returncode == 0, out.read_text() + logs
    answer = json.loads(out.read_text().splitlines()[-1])
    assert answer["object"] == "chat.completion" and answer["model"] == "tiny", answer
    assert answer["usage"]["completion_tokens"] > 0
    assert (tmp_path / "tiny.gguf").stat().st_size > 100_000


@pytest.mark.slow
@pytest.mark.e2e
def test_the_readme_local_cloud_runs_as_written(tmp_path: Path) -> None:
    """`agentcloud local up` as the README's "without a cloud account" block uses it: the twin and the
    gateway, a deployment created from the example stack reaches active through droplets that are network
    namespaces, and chat is answered; killing it leaves no namespace behind."""
    from tests.test_twin_hosts import pytestmark as needs_hosts

    if needs_hosts.args[0]:
        pytest.skip(needs_hosts.kwargs["reason"])
    block = readme_block("local-up")
    port = free_port()
    script = block.replace("8080", str(port))
    assert script.count(str(port)) == 2, "the port the README uses moved"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCLOUD_")}
    env["PATH"] = f"{LLAMA_SERVER.parent}:{Path(sys.executable).parent}:{env['PATH']}"
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    done = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{script}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    log = tmp_path / "demo" / "local.log"
    shown = done.stdout + done.stderr + (log.read_text()[-3000:] if log.exists() else "")
    assert done.returncode == 0, shown
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] > 0, answer
    assert "active" in done.stdout and "admin key (org_local)" in log.read_text()
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    assert not {n for n in after - before if n.startswith("acl")}, "local up left namespaces behind"

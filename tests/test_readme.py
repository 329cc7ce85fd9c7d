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

"""agentcloud as an installed tool: a non-editable install from a copy of the repository into a fresh
virtualenv, used from an empty folder (issue 12's bar). The virtualenv borrows the dev environment's
third-party packages through a .pth line (no network, seconds instead of minutes); agentcloud itself is built
and installed for real, so what it lacks as an installed package, it lacks here."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT


def _run(
    args: list[str], cwd: Path, env: dict[str, str], ok: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    if ok:
        assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A virtualenv with agentcloud installed non-editable from a copy of this repository's files."""
    base = tmp_path_factory.mktemp("install")
    clone = base / "clone"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in listed:
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # third-party packages from the dev environment, not its editable agentcloud (that .pth is not processed)
    (site / "borrowed.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTCLOUD_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["AGENTCLOUD_DATA_DIR"] = str(base / "data")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            str(clone),
        ],
        cwd=base,
        env=env,
    )
    yield venv, env


@pytest.mark.slow
def test_installed_tool_starts_a_repository_plans_it_and_serves(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, env = installed
    tool = str(venv / "bin" / "agentcloud")
    python = str(venv / "bin" / "python")
    empty = tmp_path / "work"
    empty.mkdir()

    version = _run([tool, "--version"], empty, env)
    assert version.stdout.startswith("agentcloud 0.") and "not installed" not in version.stdout

    # the package is agentcloud, installed into the virtualenv; nothing named infra is importable
    where = _run([python, "-c", "import agentcloud; print(agentcloud.__file__)"], empty, env).stdout
    assert str(venv) in where, where
    gone = _run([python, "-c", "import infra"], empty, env, ok=False)
    assert gone.returncode != 0 and "No module named 'infra'" in gone.stderr

    _run([tool, "init", "demo"], empty, env)
    demo = empty / "demo"
    planned = _run([tool, "plan"], demo, env)
    assert "example" in planned.stdout and "fits" in planned.stdout, planned.stdout
    # the same from a subfolder: the project is found upward, as Pulumi and git find theirs
    assert "example" in _run([tool, "plan"], demo / "stacks", env).stdout
    rendered = _run([tool, "render", "example", "-o", str(tmp_path / "out")], demo, env)
    assert "user-data" in rendered.stdout and (tmp_path / "out" / "user-data.yaml").exists()
    assert _run([tool, "catalog", "check"], demo, env).stdout.count("presets.yaml") == 2

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [tool, "gateway", "serve", "--port", str(port)],
        cwd=demo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert answer is not None and answer.status_code == 200, server.stdout.read() if server.stdout else ""
    finally:
        server.terminate()
        server.wait(timeout=30)

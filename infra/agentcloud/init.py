"""`agentcloud init DIR`: a new GitOps repository of deployments that plans offline at once.

It holds the Pulumi project and its two-line program, a catalog overlay (empty until the user changes
something), one example stack, the guardrail policy pack and the GitOps workflow this tool ships, a README and
a requirements.txt that pins the agentcloud running the command (from wherever it was installed)."""

from __future__ import annotations

import json
from importlib import resources
from importlib.metadata import PackageNotFoundError, distribution
from importlib.resources.abc import Traversable
from pathlib import Path

from agentcloud import version
from agentcloud.errors import InfraError
from agentcloud.project import shipped

RENAMED = {"gitignore": ".gitignore"}  # package data cannot carry dot files


def requirement() -> str:
    """The agentcloud requirement that reproduces this installation: its VCS URL and commit, its local folder
    (PEP 610's direct_url.json), or the released version."""
    try:
        raw = distribution("agentcloud").read_text("direct_url.json")
    except PackageNotFoundError:
        raw = None
    if raw:
        origin = json.loads(raw)
        url = origin.get("url", "")
        vcs = origin.get("vcs_info")
        if vcs:
            return f"agentcloud @ {vcs.get('vcs', 'git')}+{url}@{vcs.get('commit_id', '')}"
        if url.startswith("file://"):
            return (
                "# installed from a local folder; CI needs a URL it can reach, for example\n"
                "# agentcloud @ git+https://github.com/<you>/agentcloud@<tag>\n"
                f"agentcloud @ {url}"
            )
    return f"agentcloud=={version()}"


def init(directory: Path) -> list[Path]:
    """Write the new repository into ``directory`` (created; an existing one must be empty). Returns the
    files written."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InfraError(
            f"{directory}: already exists and is not an empty folder; nothing was written. "
            "Choose a new folder name, or empty it first"
        )
    written: list[Path] = []

    def write(relative: str, text: str) -> None:
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)

    starter = resources.files("agentcloud") / "starter"
    name = directory.resolve().name

    def copy_tree(node: Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            relative = f"{prefix}{RENAMED.get(child.name, child.name)}"
            if child.is_dir():
                if child.name != "__pycache__":
                    copy_tree(child, relative + "/")
            else:
                text = child.read_text(encoding="utf-8")
                write(relative, text.replace("{name}", name) if relative == "README.md" else text)

    copy_tree(starter, "")
    policy = shipped("policy")
    for path in sorted(policy.iterdir()):
        if path.is_file() and path.suffix in (".py", ".yaml"):
            write(f"policy/{path.name}", path.read_text(encoding="utf-8"))
    write(".github/workflows/deployments.yml", shipped(".github/workflows/deployments.yml").read_text())
    write("requirements.txt", requirement() + "\n")
    return written

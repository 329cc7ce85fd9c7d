"""Where things are: the tool's shipped catalog and templates, and the user's project.

The project is the folder that holds ``Pulumi.yaml``, found from the current directory upward as Pulumi and
git find theirs (``AGENTCLOUD_PROJECT`` names it outright). Its stack files live in Pulumi.yaml's
``stackConfigDir`` (``stacks/`` in a project made by ``agentcloud init``). Its ``presets.yaml``, when present,
extends or overrides the catalog the tool ships, so an upgrade of the tool brings new GPUs and prices without
a merge; its ``templates/``, when present, override the shipped templates file by file.

The shipped catalog and templates are package data of an installed tool (``agentcloud/data``, copied there by
setup.py's build step) and the checkout's own ``presets.yaml`` and ``templates/`` in a source tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from agentcloud.data_files import SHIPPED
from agentcloud.errors import InfraError

PACKAGE_DATA = Path(__file__).resolve().parent / "data"
CHECKOUT = Path(__file__).resolve().parents[2]
"""The repository root when the package runs from a source tree (infra/agentcloud -> the root)."""

PROJECT_FILE = "Pulumi.yaml"


class ProjectNotFound(InfraError):
    """No Pulumi.yaml in the current directory or any parent (and AGENTCLOUD_PROJECT not set)."""


def shipped(name: str) -> Path:
    """A file or folder the tool ships (a key of ``data_files.SHIPPED``, named by its repository path):
    package data in an installed tool, the checkout's own in a source tree."""
    installed = PACKAGE_DATA / SHIPPED[name]
    if installed.exists():
        return installed
    checkout = CHECKOUT / name
    if checkout.exists() and (CHECKOUT / "infra" / "agentcloud").is_dir():
        return checkout
    raise InfraError(
        f"this agentcloud installation lacks its {name} ({installed} is missing): reinstall it "
        "(`pip install --force-reinstall agentcloud`, or from a clone: `pip install .`)"
    )


def shipped_catalog() -> Path:
    return shipped("presets.yaml")


def shipped_templates() -> Path:
    return shipped("templates")


@dataclass(frozen=True)
class Project:
    """A user's project: Pulumi.yaml, stack files, and optionally a catalog overlay and template overrides."""

    root: Path
    stacks_dir: Path

    @property
    def catalog_overlay(self) -> Path | None:
        """The project's presets.yaml, unless it is the shipped catalog itself (this repository)."""
        path = self.root / "presets.yaml"
        if not path.is_file() or path.resolve() == shipped_catalog().resolve():
            return None
        return path

    @property
    def templates(self) -> Path | None:
        path = self.root / "templates"
        if not path.is_dir() or path.resolve() == shipped_templates().resolve():
            return None
        return path


def project_at(root: Path) -> Project:
    path = root / PROJECT_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InfraError(f"{path}: cannot be read as YAML ({exc}); fix it or run `agentcloud init`") from None
    if not isinstance(data, dict):
        raise InfraError(f"{path}: must be a mapping (name, runtime, stackConfigDir); see `agentcloud init`")
    config_dir = data.get("stackConfigDir")
    return Project(root=root, stacks_dir=(root / str(config_dir)).resolve() if config_dir else root)


def find_project(start: Path | None = None) -> Project | None:
    """The project holding ``start`` (default: the current directory), or None when there is none."""
    named = os.environ.get("AGENTCLOUD_PROJECT")
    if named:
        root = Path(named).expanduser().resolve()
        if not (root / PROJECT_FILE).is_file():
            raise ProjectNotFound(
                f"AGENTCLOUD_PROJECT={named}: no {PROJECT_FILE} there; point it at your project's folder or "
                "unset it to search from the current directory"
            )
        return project_at(root)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return project_at(folder)
    return None


def require_project(start: Path | None = None) -> Project:
    project = find_project(start)
    if project is None:
        where = (start or Path.cwd()).resolve()
        raise ProjectNotFound(
            f"no {PROJECT_FILE} in {where} or any folder above it: run this inside your agentcloud project, "
            "or start one with `agentcloud init DIR`"
        )
    return project


def stacks_dir() -> Path:
    """Where the current project's stack files are (its Pulumi.yaml's stackConfigDir)."""
    return require_project().stacks_dir

"""Stack operations for a deployment, through the Pulumi Automation API (needs the `pulumi` CLI).

create = write the stack file + `up`; scale = rewrite replicas/scaling + `up`; refresh = `refresh` (drift);
teardown = `destroy` (the model-cache volumes are protected: kept unless asked, then unprotected by an `up`
with agent-cloud:keepModelCache=false first). The backend is a local directory by default
(PULUMI_BACKEND_URL=file://~/.agentcloud-state); any Pulumi backend works."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from infra import PROJECT_ROOT
from infra.automation import PulumiUnavailable, require_cli
from infra.catalog import Catalog
from infra.document import Document
from infra.planner import plan
from infra.spec import DEPLOYMENT_KEY, STACKS_DIR, DeploymentSpec, parse_stack

Progress = Callable[[str], None]
DEFAULT_BACKEND = f"file://{Path.home() / '.agentcloud-state'}"


def validate_deployment(data: dict[str, Any], catalog: Catalog, file: str = "request") -> DeploymentSpec:
    """The same checks as a stack file (names, types, fit); raises SpecError or PlanError."""
    spec = parse_stack(Document(file=file, data={"config": {DEPLOYMENT_KEY: data}}), catalog)
    plan(spec, catalog)
    return spec


def api_stack_name(org_id: str, name: str) -> str:
    """The stack of a deployment created through the API: in its org's namespace (``api.<org>.<name>``), which
    no stack file in git can take (deployment names have no dots), so a tenant can never reach another's stack
    or a GitOps stack."""
    org = re.sub(r"[^A-Za-z0-9_-]", "-", org_id)
    return f"api.{org}.{name}"


def prepare_api_workspace(directory: Path) -> Path:
    """The Pulumi project folder of the stacks the API creates: their stack files live here, never in the git
    repository's stacks/ (git owns those), and the program is the repository's."""
    directory.mkdir(parents=True, exist_ok=True)
    project = directory / "Pulumi.yaml"
    if not project.exists():
        text = (PROJECT_ROOT / "Pulumi.yaml").read_text()
        text = re.sub(r"(?m)^stackConfigDir:.*$", "stackConfigDir: .", text)
        text = re.sub(
            r"(?m)^(\s*virtualenv:\s*)(\S+)$", lambda m: m.group(1) + str(PROJECT_ROOT / m.group(2)), text
        )
        project.write_text(text.rstrip() + f"\nmain: {PROJECT_ROOT}\n")
    return directory


def write_stack_file(spec: DeploymentSpec, directory: Path = STACKS_DIR, stack: str | None = None) -> Path:
    """Write (or update) Pulumi.<stack>.yaml in ``directory``, keeping every other config key there."""
    path = directory / f"Pulumi.{stack or spec.name}.yaml"
    data: dict[str, Any] = {}
    if path.exists():
        data = yaml.safe_load(path.read_text()) or {}
    config = data.setdefault("config", {})
    config[DEPLOYMENT_KEY] = spec.model_dump(mode="json", exclude_defaults=True)
    # a temporary file of its own: two writers never share one, and readers see the old or the new file
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(yaml.safe_dump(data, sort_keys=False))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


TOKEN_VARIABLES = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN")


class PulumiStackOps:
    """Stack operations through the Pulumi Automation API (the control plane's `StackOps` in production)."""

    def __init__(self, work_dir: Path = PROJECT_ROOT, backend_url: str | None = None) -> None:
        self.work_dir = work_dir
        self.backend_url = backend_url or os.environ.get("PULUMI_BACKEND_URL", DEFAULT_BACKEND)

    def preflight(self) -> None:
        """The Pulumi CLI and a DigitalOcean token, before any deployment record exists."""
        require_cli()
        if not any(os.environ.get(v) for v in TOKEN_VARIABLES):
            raise PulumiUnavailable(
                "no DigitalOcean token in the gateway's environment; set DIGITALOCEAN_TOKEN (a secret of the "
                "gateway stack) so the control plane can create droplets"
            )

    def _stack(self, name: str) -> Any:
        require_cli()
        from pulumi import automation as auto

        env = {"PULUMI_BACKEND_URL": self.backend_url}
        opts = auto.LocalWorkspaceOptions(work_dir=str(self.work_dir), env_vars=env)
        return auto.create_or_select_stack(stack_name=name, work_dir=str(self.work_dir), opts=opts)

    @staticmethod
    def _outputs(stack: Any) -> dict[str, Any]:
        return {k: v.value for k, v in stack.outputs().items()}

    def up(self, stack: str, progress: Progress) -> dict[str, Any]:
        s = self._stack(stack)
        s.up(on_output=progress)
        return self._outputs(s)

    def refresh(self, stack: str, progress: Progress) -> dict[str, Any]:
        s = self._stack(stack)
        s.refresh(on_output=progress)
        return self._outputs(s)

    def destroy(self, stack: str, keep_model_cache: bool, progress: Progress) -> None:
        from pulumi import automation as auto

        s = self._stack(stack)
        if not keep_model_cache:
            s.set_config("agent-cloud:keepModelCache", auto.ConfigValue("false"))
            s.up(on_output=progress)  # lifts the volumes' protection
        s.destroy(on_output=progress, exclude_protected=keep_model_cache)

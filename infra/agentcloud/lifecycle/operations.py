"""Stack operations for a deployment, through the Pulumi Automation API (needs the `pulumi` CLI).

create = write the stack file + `up`; scale = rewrite replicas/scaling + `up`; refresh = `refresh` (drift);
teardown = `destroy` (the model-cache volumes are protected: kept unless asked, then unprotected by an `up`
with agent-cloud:keepModelCache=false first). The backend is a local directory by default
(PULUMI_BACKEND_URL=file://~/.agentcloud-state); any Pulumi backend works."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agentcloud import PULUMI_PROJECT
from agentcloud.automation import PulumiUnavailable, require_cli
from agentcloud.catalog import Catalog
from agentcloud.document import Document
from agentcloud.planner import plan
from agentcloud.spec import DEPLOYMENT_KEY, DeploymentSpec, parse_stack

Progress = Callable[[str], None]


def default_backend() -> str:
    """PULUMI_BACKEND_URL, else a local directory: under AGENTCLOUD_DATA_DIR when set (a gateway droplet,
    whose service user has no home), else ~/.agentcloud-state."""
    if os.environ.get("PULUMI_BACKEND_URL"):
        return os.environ["PULUMI_BACKEND_URL"]
    data = os.environ.get("AGENTCLOUD_DATA_DIR")
    return f"file://{Path(data) / 'pulumi-state'}" if data else f"file://{Path.home() / '.agentcloud-state'}"


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


API_PROGRAM = '''"""The Pulumi program of the stacks the management API creates (written by agentcloud)."""

from agentcloud.program import run

run()
'''


def prepare_api_workspace(directory: Path) -> Path:
    """The Pulumi project folder of the stacks the API creates: their stack files live here, never in a git
    repository's stacks/ (git owns those). Its program is the installed package's (a two-line __main__.py) and
    its runtime the Python running this gateway, so it needs no checkout."""
    directory.mkdir(parents=True, exist_ok=True)
    runtime: dict[str, Any] = {"name": "python"}
    if sys.prefix != sys.base_prefix:  # a virtualenv: Pulumi runs the program in the same one
        runtime["options"] = {"toolchain": "pip", "virtualenv": sys.prefix}
    project = {
        "name": PULUMI_PROJECT,
        "description": "Deployments created through the agentcloud management API",
        "runtime": runtime,
        "stackConfigDir": ".",
    }
    _write_if_changed(directory / "Pulumi.yaml", yaml.safe_dump(project, sort_keys=False))
    _write_if_changed(directory / "__main__.py", API_PROGRAM)
    return directory


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def write_stack_file(spec: DeploymentSpec, directory: Path, stack: str | None = None) -> Path:
    """Write (or update) Pulumi.<stack>.yaml in ``directory``, keeping every other config key there."""
    path = directory / f"Pulumi.{stack or spec.name}.yaml"
    data: dict[str, Any] = {}
    if path.exists():
        data = yaml.safe_load(path.read_text()) or {}
    config = data.setdefault("config", {})
    config[DEPLOYMENT_KEY] = spec.model_dump(mode="json", exclude_defaults=True)
    return write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def write_text_atomic(path: Path, text: str) -> Path:
    """A temporary file of its own (two writers never share one), then renamed: readers see the old or the
    new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


TOKEN_VARIABLES = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN")


class PulumiStackOps:
    """Stack operations through the Pulumi Automation API (the control plane's `StackOps` in production)."""

    def __init__(
        self, work_dir: Path, backend_url: str | None = None, policy_pack: str | None = None
    ) -> None:
        self.work_dir, self.policy_pack = work_dir, policy_pack
        self.backend_url = backend_url or default_backend()

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

    def up(
        self, stack: str, progress: Progress, replicas: int | None = None, keep_live: bool = False
    ) -> dict[str, Any]:
        """`pulumi up`; when DigitalOcean has no capacity for the stack's placement, again on each fallback
        in turn (stack config agent-cloud:placement), starting from where the stack landed before. The live
        replica count (``replicas``, or with ``keep_live`` the stack's last `replicas` output) goes to the
        program, which keeps it within the stack file's scaling bounds: the stack file is never rewritten for
        it. Neither: the stack file's count (the control plane's own stack files, which it keeps current)."""
        from pulumi import automation as auto

        from agentcloud.catalog import load_catalog
        from agentcloud.lifecycle.placement import up_with_fallbacks
        from agentcloud.program import LIVE_REPLICAS
        from agentcloud.project import project_at
        from agentcloud.spec import PLACEMENT_KEY, load_stack

        s = self._stack(stack)
        spec = load_stack(project_at(self.work_dir).stacks_dir / f"Pulumi.{stack}.yaml", load_catalog())
        if replicas is None and keep_live:
            last = self._outputs(s).get("replicas")
            replicas = int(last) if isinstance(last, (int, float)) else None
        if replicas is not None:
            s.workspace.env_vars = {**(s.workspace.env_vars or {}), LIVE_REPLICAS: str(replicas)}
        try:
            start = int(s.get_config(PLACEMENT_KEY).value)
        except auto.CommandError:  # not set: as declared
            start = 0

        def attempt(index: int) -> dict[str, Any]:
            s.set_config(PLACEMENT_KEY, auto.ConfigValue(str(index)))
            s.up(on_output=progress, policy_packs=[self.policy_pack] if self.policy_pack else None)
            return self._outputs(s)

        return up_with_fallbacks(spec, attempt, progress, start=start if start <= len(spec.fallbacks) else 0)

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

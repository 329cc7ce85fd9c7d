"""Thin access to Pulumi stacks through the Automation API (needs the `pulumi` CLI on PATH)."""

from __future__ import annotations

import shutil
from typing import Any

from agentcloud.errors import InfraError
from agentcloud.project import require_project


class PulumiUnavailable(InfraError):
    """The Pulumi CLI is not installed, so stack state cannot be read or changed from here."""


def require_cli() -> None:
    if shutil.which("pulumi") is None:
        raise PulumiUnavailable(
            "the pulumi CLI is not on PATH; install it (https://www.pulumi.com/docs/install/) "
            "or pass the hosts and host key explicitly"
        )


def select(stack: str) -> Any:
    require_cli()
    from pulumi import automation as auto

    return auto.select_stack(stack_name=stack, work_dir=str(require_project().root))


def outputs(stack: str) -> dict[str, Any]:
    return {k: v.value for k, v in select(stack).outputs().items()}


def secret_config(stack: str, key: str) -> str | None:
    """A config value (decrypted) or None when unset."""
    from pulumi import automation as auto

    try:
        return str(select(stack).get_config(key).value)
    except auto.CommandError:
        return None

"""agentcloud: dedicated-GPU LLM deployments on DigitalOcean, declared as code."""

from __future__ import annotations

PULUMI_PROJECT = "agent-cloud"
"""The Pulumi project name; stack config keys are namespaced with it."""


def version() -> str:
    """The installed package's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("agentcloud")
    except PackageNotFoundError:
        return "0 (not installed)"

"""What `pulumi up` runs for a deployment stack (kept out of __main__.py so tests can import it)."""

from __future__ import annotations

import pulumi

from infra import PULUMI_PROJECT
from infra.catalog import load_catalog
from infra.components.gpu_deployment import GpuDeployment, GpuDeploymentArgs
from infra.document import Document, load_document
from infra.planner import ServingPlan, plan
from infra.spec import DEPLOYMENT_KEY, STACKS_DIR, parse_stack


def plan_from_config() -> ServingPlan:
    """Read the deployment from the running stack's config and plan it, with the same checks as the CLI."""
    config = pulumi.Config(PULUMI_PROJECT)
    deployment = config.require_object("deployment")
    stack_file = STACKS_DIR / f"Pulumi.{pulumi.get_stack()}.yaml"
    # Prefer the file itself, so errors carry line numbers; Pulumi's view of the config is the same data.
    doc = (
        load_document(stack_file)
        if stack_file.exists()
        else Document(file=str(stack_file), data={"config": {DEPLOYMENT_KEY: deployment}})
    )
    return plan(parse_stack(doc, load_catalog()), load_catalog())


def run() -> GpuDeployment:
    serving = plan_from_config()
    deployment = GpuDeployment(serving.name, GpuDeploymentArgs(plan=serving))
    pulumi.export("endpoints", deployment.endpoints)
    pulumi.export("droplet_ids", [d.id for d in deployment.droplets])
    pulumi.export("hourly_usd", serving.hourly_usd)
    pulumi.export("monthly_usd", serving.monthly_usd)
    pulumi.export("host_public_key", deployment.host_key.public_openssh)
    pulumi.export("plan", serving.summary())
    return deployment

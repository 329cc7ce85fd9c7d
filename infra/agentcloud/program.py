"""What `pulumi up` runs for a deployment stack (kept out of __main__.py so tests can import it)."""

from __future__ import annotations

import os

import pulumi

from agentcloud import PULUMI_PROJECT
from agentcloud.catalog import load_catalog
from agentcloud.components.gpu_deployment import GpuDeployment, GpuDeploymentArgs
from agentcloud.document import Document, load_document
from agentcloud.errors import InfraError
from agentcloud.planner import ServingPlan, plan
from agentcloud.project import stacks_dir
from agentcloud.spec import DEPLOYMENT_KEY, Backend, DeploymentSpec, parse_stack


def plan_from_config() -> ServingPlan:
    """Read the deployment from the running stack's config and plan it, with the same checks as the CLI."""
    config = pulumi.Config(PULUMI_PROJECT)
    deployment = config.require_object("deployment")
    stack_file = stacks_dir() / f"Pulumi.{pulumi.get_stack()}.yaml"
    # Prefer the file itself, so errors carry line numbers; Pulumi's view of the config is the same data.
    doc = (
        load_document(stack_file)
        if stack_file.exists()
        else Document(file=str(stack_file), data={"config": {DEPLOYMENT_KEY: deployment}})
    )
    catalog = load_catalog()
    spec = parse_stack(doc, catalog)
    alternatives = spec.alternatives()
    index = config.get_int("placement") or 0
    if not 0 <= index < len(alternatives):
        raise InfraError(
            f"{stack_file}: agent-cloud:placement is {index} but the deployment has {len(alternatives) - 1} "
            "fallback(s); unset it (`pulumi config rm agent-cloud:placement`)"
        )
    return plan(with_live_replicas(alternatives[index]), catalog)


LIVE_REPLICAS = "AGENTCLOUD_REPLICAS"
"""The live replica count, set by the stack operations (the autoscaler's choice, or what the stack ran with
last): the count is theirs, the bounds are git's."""


def with_live_replicas(spec: DeploymentSpec) -> DeploymentSpec:
    """A deployment that declares scaling bounds runs with the live count (clamped to the bounds), not the
    stack file's `replicas`, which is only where it starts: so a GitOps up keeps what the autoscaler chose,
    and nothing has to rewrite a git-managed file. Without bounds, the file's count is the count."""
    live = os.environ.get(LIVE_REPLICAS)
    if spec.scaling is None or not live or not live.isdigit():
        return spec
    bounds = spec.scaling
    return spec.model_copy(update={"replicas": min(max(int(live), bounds.min_replicas), bounds.max_replicas)})


def run() -> pulumi.ComponentResource:
    """A stack holds either one deployment or the gateway."""
    if pulumi.Config(PULUMI_PROJECT).get_object("gateway") is not None:
        return run_gateway()
    return run_deployment()


def run_gateway() -> pulumi.ComponentResource:
    from agentcloud.components.gateway_host import GatewayHost, GatewayHostArgs
    from agentcloud.gateway_stack import GatewaySpec

    raw = pulumi.Config(PULUMI_PROJECT).require_object("gateway")
    try:
        spec = GatewaySpec.model_validate(raw)
    except ValueError as exc:
        raise InfraError(f"stacks/Pulumi.{pulumi.get_stack()}.yaml: agent-cloud:gateway: {exc}") from None
    host = GatewayHost(spec.name, GatewayHostArgs(spec=spec))
    pulumi.export("url", host.url)
    pulumi.export("droplet_ids", [d.id for d in host.droplets])
    pulumi.export("host_public_key", host.host_key.public_openssh)
    pulumi.export("gateway_tag", spec.tag)
    if host.postgres is not None and host.redis is not None:
        pulumi.export("database_url", pulumi.Output.secret(host.postgres.private_uri))
        pulumi.export("redis_url", pulumi.Output.secret(host.redis.private_uri))
    return host


def run_deployment() -> pulumi.ComponentResource:
    serving = plan_from_config()
    if serving.backend is Backend.DEDICATED_INFERENCE:
        return run_dedicated_inference(serving)
    keep = pulumi.Config(PULUMI_PROJECT).get_bool("keepModelCache")
    deployment = GpuDeployment(
        serving.name, GpuDeploymentArgs(plan=serving, keep_model_cache=keep is not False)
    )
    pulumi.export("endpoints", deployment.endpoints)
    pulumi.export("replicas", serving.replicas)
    pulumi.export("droplet_ids", [d.id for d in deployment.droplets])
    pulumi.export("hourly_usd", serving.hourly_usd)
    pulumi.export("monthly_usd", serving.monthly_usd)
    pulumi.export("host_public_key", deployment.host_key.public_openssh)
    pulumi.export("plan", serving.summary())
    return deployment


def run_dedicated_inference(serving: ServingPlan) -> pulumi.ComponentResource:
    from agentcloud.components.dedicated_inference import (
        DedicatedInferenceArgs,
        DedicatedInferenceDeployment,
    )

    deployment = DedicatedInferenceDeployment(serving.name, DedicatedInferenceArgs(plan=serving))
    pulumi.export("endpoint", deployment.endpoint)
    pulumi.export("hourly_usd", serving.hourly_usd)
    pulumi.export("monthly_usd", serving.monthly_usd)
    pulumi.export("plan", serving.summary())
    return deployment

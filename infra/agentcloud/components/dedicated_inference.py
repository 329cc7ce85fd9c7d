"""A deployment on DigitalOcean's managed Dedicated Inference instead of droplets (``backend:
dedicated-inference``): one ``digitalocean.DedicatedInference`` with the plan's model and accelerator, in a
VPC (the deployment's own, or ``network.vpc_uuid``) so that the gateway reaches its private endpoint. No
droplet, volume or firewall of ours: DigitalOcean runs the engine. The Hugging Face token of gated models
comes from the stack's secret config (``agent-cloud:hfToken``), never from the stack file."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as do

from agentcloud import PULUMI_PROJECT
from agentcloud.components.network import deployment_vpc
from agentcloud.planner import ServingPlan


@dataclass(frozen=True)
class DedicatedInferenceArgs:
    plan: ServingPlan


class DedicatedInferenceDeployment(pulumi.ComponentResource):
    TYPE = "agentcloud:deployment:DedicatedInference"

    def __init__(
        self, name: str, args: DedicatedInferenceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        plan = args.plan
        child = pulumi.ResourceOptions(parent=self)
        what = " (Dedicated Inference)"
        vpc_id = deployment_vpc(name, plan.name, plan.region, plan.network.vpc_uuid, child, what)
        token = pulumi.Config(PULUMI_PROJECT).get_secret("hfToken")
        self.service = do.DedicatedInference(
            f"{name}-inference",
            name=f"agentcloud-{plan.name}",
            region=plan.region,
            vpc_uuid=vpc_id,
            enable_public_endpoint=False,
            hugging_face_token=token,
            model_deployments=[
                do.DedicatedInferenceModelDeploymentArgs(
                    model_slug=plan.model_id,
                    model_provider="hugging_face",
                    provider_model_id=plan.model.hf_repo,
                    accelerators=[
                        do.DedicatedInferenceModelDeploymentAcceleratorArgs(
                            accelerator_slug=plan.size_slug, scale=plan.replicas, type=plan.accelerator_type
                        )
                    ],
                )
            ],
            opts=child,
        )
        self.endpoint = self.service.private_endpoint_fqdn
        self.register_outputs({"endpoint": self.endpoint})

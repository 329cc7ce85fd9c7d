"""The agentcloud policy pack: `pulumi preview --policy-pack policy`. The checks live in
infra/agentcloud/policy_checks.py."""

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from agentcloud import policy_checks as checks


def firewalls(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == checks.FIREWALL:
        for message in checks.firewall_violations(args.props):
            report(message)


def droplets(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == checks.DROPLET:
        for message in checks.droplet_violations(args.props):
            report(message)


def ceiling(args: StackValidationArgs, report: ReportViolation) -> None:
    config = args.get_config() or {}
    limit = config.get("max_hourly_usd")
    drops = [r.props for r in args.resources if r.resource_type == checks.DROPLET]
    message = checks.cost_violation(
        drops, checks.catalog_prices(), float(limit) if limit is not None else None
    )
    if message:
        report(message)


PolicyPack(
    name="agentcloud-guardrails",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(
            name="firewall-exposure", description="no SSH or engine port from the world", validate=firewalls
        ),
        ResourceValidationPolicy(
            name="gpu-droplets-tagged-in-vpc", description="GPU droplets tagged, in a VPC", validate=droplets
        ),
        StackValidationPolicy(
            name="hourly-cost-ceiling", description="$/h ceiling per stack", validate=ceiling
        ),
    ],
)

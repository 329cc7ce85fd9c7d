"""What an installed agentcloud carries from the repository besides its code (read by setup.py without
importing the package, hence no imports here): repository path -> path under ``agentcloud/data``."""

SHIPPED = {
    "presets.yaml": "presets.yaml",  # the default catalog
    "templates": "templates",  # engine wrappers, systemd units, host scripts
    "policy": "policy",  # the guardrail policy pack (`agentcloud init` copies it)
    ".github/workflows/deployments.yml": "gitops/deployments.yml",  # the GitOps workflow (likewise)
}

"""The Pulumi program: stack config -> plan -> components -> outputs. Run with `pulumi up -s <stack>`."""

from agentcloud.program import run

run()

"""The Pulumi program: stack config -> plan -> components -> outputs. Run with `pulumi up -s <stack>`."""

from infra.program import run

run()

"""The Pulumi program: the deployment of stacks/Pulumi.<stack>.yaml, planned and declared by agentcloud."""

from agentcloud.program import run

run()

"""The upstream side of the data plane: a lean HTTP/1.1 client, fallback across targets with circuit breakers,
SSE scanning and the Anthropic <-> OpenAI translation. Imports nothing of the gateway, the control plane,
Pulumi, SSH or the CLI."""

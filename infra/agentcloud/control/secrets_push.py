"""The engine's secrets, delivered by the control plane to every droplet of a deployment after each up.

Every path that makes droplets through the control plane (create, scale, the autoscaler, wake from zero)
converges through one `up`; right after it, before the health check, this writes the engine's environment
file (the engine API key, and the Hugging Face token when the gateway has one) over SFTP to each droplet, host
key pinned, as `agentcloud secrets push` does by hand. The engine's path unit starts it when the file appears.
Nothing secret goes into user-data, a stack file or a log line. docs/secrets.md weighs this push against a
pull at boot with a one-time token."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from agentcloud.gateway.config import GatewayConfig

PushSecrets = Callable[[Sequence[dict[str, Any]], str], str | None]
"""(hosts from the stack outputs, engine) -> None when delivered to every host, else the reason it was not."""

ENGINE_KEY_ENV = "AGENTCLOUD_ENGINE_API_KEY"
"""The variable holding the engines' API key in the gateway's environment (the data plane sends it)."""


def pusher(config: GatewayConfig) -> PushSecrets | None:
    """The push, or None when the gateway has no engine key to deliver (then engines start only when their
    secrets are pushed by hand, and each up's log says so)."""
    if not config.engine_api_key:
        return None
    retry_s = config.secrets_retry_s
    key, hf_token, identity, path = (
        config.engine_api_key,
        config.hf_token,
        config.ssh_key,
        config.engine_env_path,
    )

    def push(hosts: Sequence[dict[str, Any]], engine: str) -> str | None:
        from agentcloud.remote import Target, push_env

        if not hosts:
            return "the stack exports no SSH host with a pinned host key (host_public_key)"
        values = {"VLLM_API_KEY" if engine == "vllm" else "LLAMA_API_KEY": key}
        if hf_token:
            values["HF_TOKEN"] = hf_token
        targets = [
            Target(
                host=str(h["host"]),
                host_public_key=str(h["host_public_key"]),
                port=int(h.get("port", 22)),
                username=str(h.get("username", "root")),
            )
            for h in hosts
        ]
        # A droplet reports itself active before its sshd answers, and an SSH session can stall: each host is
        # retried for a while when it cannot be reached (a wrong host key or a refused login is final).
        for target in targets:
            deadline = time.monotonic() + retry_s
            while True:
                try:
                    push_env([target], values, path, key_filename=identity)
                    break
                except Exception as exc:  # the reason, never the values
                    unreachable = "cannot reach" in str(exc)
                    if not unreachable or time.monotonic() > deadline:
                        return f"{type(exc).__name__}: {str(exc)[:200]}"
                    time.sleep(2.0)
        return None

    return push

"""An SSH host key generated once per deployment and kept (as a secret) in the stack's state.

It is injected through cloud-init so the droplet presents a key we already know, and every SSH client
(secrets delivery, model uploads) pins it instead of trusting on first use. A dynamic resource keeps it
stable across `pulumi up` runs; replacing it would replace the droplets.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


def generate_host_key() -> tuple[str, str]:
    """A fresh ed25519 key pair: (private key in OpenSSH PEM, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


class _HostKeyProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        private, public = generate_host_key()
        return CreateResult(
            id_=public.split()[1][-16:],
            outs={"comment": props.get("comment", ""), "private_openssh": private, "public_openssh": public},
        )


class HostKey(Resource):
    """Outputs ``private_openssh`` (secret) and ``public_openssh``."""

    private_openssh: pulumi.Output[str]
    public_openssh: pulumi.Output[str]

    def __init__(self, name: str, comment: str, opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["private_openssh"])
        )
        super().__init__(
            _HostKeyProvider(),
            name,
            {"comment": comment, "private_openssh": None, "public_openssh": None},
            opts,
        )

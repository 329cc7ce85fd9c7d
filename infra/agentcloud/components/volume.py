"""Model-cache volumes: one per replica slot, kept across scale to zero and droplet replacement."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as do


@dataclass(frozen=True)
class ModelCacheArgs:
    """A model-cache volume's slot, size and protection."""

    deployment: str
    region: str
    size_gib: int
    count: int
    label: str
    tags: tuple[str, ...]
    protect: bool = True


class ModelCache(pulumi.ComponentResource):
    """``count`` ext4 volumes labelled ``label``; protected so only an explicit teardown deletes them."""

    TYPE = "agentcloud:storage:ModelCache"

    def __init__(self, name: str, args: ModelCacheArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, opts)
        self.volumes = [
            do.Volume(
                f"{name}-{i}",
                name=f"{args.deployment}-cache-{i}",
                region=args.region,
                size=args.size_gib,
                initial_filesystem_type="ext4",
                initial_filesystem_label=args.label,
                description=f"agentcloud model cache for {args.deployment} (replica slot {i})",
                tags=list(args.tags),
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
            )
            for i in range(args.count)
        ]
        self.register_outputs({"volume_ids": [v.id for v in self.volumes]})

"""Pulumi mocks that record every resource, for component tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import pulumi


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self._ids = itertools.count(1000)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        self.resources.append(args)
        rid = str(next(self._ids))  # int-parsable, as DigitalOcean droplet ids are
        state = dict(args.inputs)
        if args.typ == "digitalocean:index/droplet:Droplet":
            n = int(rid) % 250
            state.update(ipv4Address=f"198.51.100.{n}", ipv4AddressPrivate=f"10.10.0.{n}", status="active")
        if args.typ == "pulumi-python:dynamic:Resource":
            state.update(
                private_openssh="-----BEGIN OPENSSH PRIVATE KEY-----\nmock\n",
                public_openssh="ssh-ed25519 AAAAmock",
            )
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ == typ]


F = TypeVar("F", bound=Callable[..., Any])


def pulumi_test(fn: F) -> F:
    """`pulumi.runtime.test` with its type kept (Pulumi's decorator is untyped)."""
    return cast(F, pulumi.runtime.test(fn))  # type: ignore[no-untyped-call]

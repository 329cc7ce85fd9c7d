"""Stack operations for gateway processes started by tests (AGENTCLOUD_STACK_OPS=tests.gateway.stand_in_ops:
from_env). Like a stack: `up` reads the stack file the control plane wrote and answers one endpoint per
replica, here the test's engine; it takes a while (FAKE_OPS_DELAY_S), as a real `up` does. Every operation's
start and end is appended to FAKE_OPS_LOG, so a test sees whether two ever overlapped, whichever process ran
them."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import yaml


def stack_deployment(stacks: Path, stack: str) -> dict[str, Any]:
    """The deployment object of a stack file, as `pulumi up` reads it."""
    text = (stacks / f"Pulumi.{stack}.yaml").read_text()
    return dict(yaml.safe_load(text)["config"]["agent-cloud:deployment"])


def outputs_for(cfg: dict[str, Any], engine_port: int, host_public_key: str | None = None) -> dict[str, Any]:
    """A deployment stack's outputs: one endpoint per replica, all at the test's engine on 127.0.0.1."""
    endpoints = [
        {"private_ip": "127.0.0.1", "public_ip": "198.51.100.1", "port": engine_port, "droplet_id": str(i)}
        for i in range(int(cfg.get("replicas", 1)))
    ]
    plan = {"model_id": cfg["model_id"], "gpu_type": cfg.get("gpu_type"), "preset": cfg.get("preset")}
    out: dict[str, Any] = {"endpoints": endpoints, "plan": plan}
    if host_public_key:
        out["host_public_key"] = host_public_key
    return out


SPEC: dict[str, Any] = {
    "name": "api-8b",
    "model_id": "llama-3.1-8b-instruct",
    "gpu_type": "h100",
    "region": "tor1",
    "replicas": 1,
    "preset": "speed",
}


class FakeOps:
    """Answers like a stack: one endpoint per replica in the stack file, all at the fake upstream."""

    def __init__(self, port: int, stacks: Path) -> None:
        self.port, self.stacks = port, stacks
        self.calls: list[tuple[str, str, Any]] = []
        self.gate = threading.Event()
        self.gate.set()

    def up(self, stack: str, progress: Any) -> dict[str, Any]:
        progress(f"Updating ({stack})")
        self.gate.wait(10)
        cfg = stack_deployment(self.stacks, stack)
        self.calls.append(("up", stack, cfg.get("replicas", 1)))
        return outputs_for(cfg, self.port, "ssh-ed25519 AAAA")

    def refresh(self, stack: str, progress: Any) -> dict[str, Any]:
        return self.up(stack, progress)

    def destroy(self, stack: str, keep_model_cache: bool, progress: Any) -> None:
        self.calls.append(("destroy", stack, keep_model_cache))

    def preflight(self) -> None:
        return None  # a stand-in cloud needs no CLI and no token


class StandInOps:
    def __init__(self, stacks: Path, engine_port: int, delay_s: float, log: Path) -> None:
        self.stacks, self.engine_port, self.delay_s, self.log = stacks, engine_port, delay_s, log

    def _record(self, event: str, op: str, stack: str, replicas: int = 0) -> None:
        line = json.dumps(
            {
                "event": event,
                "op": op,
                "stack": stack,
                "replicas": replicas,
                "at": time.time(),
                "pid": os.getpid(),
            }
        )
        with self.log.open("a") as f:
            f.write(line + "\n")

    def up(self, stack: str, progress: Any) -> dict[str, Any]:
        cfg = stack_deployment(self.stacks, stack)
        replicas = int(cfg.get("replicas", 1))
        self._record("start", "up", stack, replicas)
        progress(f"Updating ({stack})")
        time.sleep(self.delay_s)
        self._record("end", "up", stack, replicas)
        return outputs_for(cfg, self.engine_port)

    def refresh(self, stack: str, progress: Any) -> dict[str, Any]:
        return self.up(stack, progress)

    def preflight(self) -> None:
        return None  # a stand-in cloud needs no CLI and no token

    def destroy(self, stack: str, keep_model_cache: bool, progress: Any) -> None:
        self._record("start", "destroy", stack)
        self._record("end", "destroy", stack)


def from_env() -> StandInOps:
    env = os.environ
    return StandInOps(
        Path(env["AGENTCLOUD_STACKS_DIR"]),
        int(env["FAKE_ENGINE_PORT"]),
        float(env.get("FAKE_OPS_DELAY_S", "1.0")),
        Path(env["FAKE_OPS_LOG"]),
    )

"""Helpers to write stack files for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_stack(tmp_path: Path, deployment: dict[str, Any], name: str = "test", **config: Any) -> Path:
    path = tmp_path / f"Pulumi.{name}.yaml"
    body = {"config": {"agent-cloud:deployment": deployment, **config}}
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def deployment(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "prod-inference",
        "model_id": "llama-3.3-70b-instruct",
        "gpu_type": "mi300x",
        "region": "atl1",
        "preset": "balanced",
        "replicas": 1,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}

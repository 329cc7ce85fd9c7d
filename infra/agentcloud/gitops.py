"""For pull requests: what each changed stack file costs before and after (`agentcloud gitops report`)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from agentcloud.catalog import Catalog
from agentcloud.document import parse_document
from agentcloud.errors import InfraError
from agentcloud.planner import plan
from agentcloud.spec import DEPLOYMENT_KEY, parse_stack


def hourly(text: str | None, file: str, catalog: Catalog) -> float | None:
    if text is None or DEPLOYMENT_KEY not in text:
        return None
    return plan(parse_stack(parse_document(text, file), catalog), catalog).hourly_usd


def git_show(ref: str, path: str) -> str | None:
    result = subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def report(paths: list[str], base_ref: str, catalog: Catalog) -> tuple[list[dict[str, Any]], str]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        name = Path(path).name.removeprefix("Pulumi.").rsplit(".", 1)[0]
        head = Path(path).read_text() if Path(path).exists() else None
        try:
            before, after = hourly(git_show(base_ref, path), path, catalog), hourly(head, path, catalog)
            error = None
        except InfraError as exc:
            before, after, error = None, None, str(exc)
        rows.append({"stack": name, "before": before, "after": after, "error": error})
    lines = ["| stack | $/h before | $/h after | change |", "|---|---|---|---|"]
    for r in rows:
        if r["error"]:
            lines.append(f"| {r['stack']} | | | **does not plan**: {str(r['error']).splitlines()[0]} |")
            continue
        b, a = float(r["before"] or 0.0), float(r["after"] or 0.0)
        lines.append(
            f"| {r['stack']} | {_fmt(r['before'], 'new')} | {_fmt(r['after'], 'removed')} | {a - b:+.2f} |"
        )
    return rows, "\n".join(lines)


def _fmt(value: float | None, missing: str) -> str:
    return f"({missing})" if value is None else f"{value:.2f}"

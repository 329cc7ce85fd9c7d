"""For pull requests: which stacks a change touches and what each costs before and after
(`agentcloud gitops report`).

A change is the list of changed files: stack files and the catalog (`presets.yaml`) alike. A changed stack
file is always reported; a changed catalog reports every stack whose plan it changes, and only those. Each
side is planned with its own revision: the base's stack file with the base's catalog, the head's with the
head's, so a price change shows as a $/h change. `--stacks` prints the touched stack files, one per line, for
the workflow to preview and apply."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from agentcloud.catalog import Catalog, catalog_sources, load_catalog, parse_catalog
from agentcloud.document import load_document, overlay, parse_document
from agentcloud.errors import InfraError
from agentcloud.planner import ServingPlan, plan
from agentcloud.spec import DEPLOYMENT_KEY, parse_stack, stack_files

CATALOG_FILE = "presets.yaml"


def planned(text: str | None, file: str, catalog: Catalog) -> ServingPlan | None:
    if text is None or DEPLOYMENT_KEY not in text:
        return None
    return plan(parse_stack(parse_document(text, file), catalog), catalog)


def git_show(ref: str, path: str) -> str | None:
    result = subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def base_catalog(base_ref: str, changed: str) -> Catalog:
    """The catalog as the base revision had it: its presets.yaml (the whole catalog in a repository that ships
    it, else the overlay laid over the catalog this tool ships)."""
    sources = catalog_sources()
    text = git_show(base_ref, changed)
    own = Path(changed).resolve()
    if sources[0].resolve() == own:  # this repository: presets.yaml is the shipped catalog itself
        if text is None:
            raise InfraError(f"{changed} does not exist at {base_ref}; nothing to compare the catalog with")
        return parse_catalog(parse_document(text, f"{base_ref}:{changed}"))
    doc = load_document(sources[0])
    if text is not None:
        doc = overlay(doc, parse_document(text, f"{base_ref}:{changed}"))
    return parse_catalog(doc)


def report(
    paths: list[str], base_ref: str, catalog: Catalog | None = None
) -> tuple[list[dict[str, Any]], str]:
    catalog = catalog or load_catalog()
    stacks = [p for p in paths if Path(p).name.startswith("Pulumi.") and Path(p).name != "Pulumi.yaml"]
    edited_catalog = next((p for p in paths if Path(p).name == CATALOG_FILE), None)
    before_catalog = base_catalog(base_ref, edited_catalog) if edited_catalog else catalog
    candidates = list(dict.fromkeys(stacks))
    if edited_catalog:  # every stack the catalog may change, as a path relative to where we are
        here = Path.cwd().resolve()
        candidates += [
            str(p.resolve().relative_to(here)) if p.resolve().is_relative_to(here) else str(p)
            for p in stack_files()
        ]
        candidates = list(dict.fromkeys(candidates))
    rows: list[dict[str, Any]] = []
    for path in candidates:
        name = Path(path).name.removeprefix("Pulumi.").rsplit(".", 1)[0]
        head = Path(path).read_text() if Path(path).exists() else None
        base = git_show(base_ref, path)
        try:
            before = planned(base, f"{base_ref}:{path}", before_catalog)
            after = planned(head, path, catalog)
            error = None
        except InfraError as exc:
            before = after = None
            error = str(exc)
        unchanged = before is None or after is None or before.summary() == after.summary()
        if path not in stacks and error is None and unchanged:
            continue  # the catalog edit does not change this stack's plan
        rows.append(
            {
                "stack": name,
                "file": path,
                "why": "stack file" if path in stacks else "catalog",
                "before": before.hourly_usd if before else None,
                "after": after.hourly_usd if after else None,
                "error": error,
            }
        )
    lines = ["| stack | changed by | $/h before | $/h after | change |", "|---|---|---|---|---|"]
    for r in rows:
        if r["error"]:
            lines.append(
                f"| {r['stack']} | {r['why']} | | | **does not plan**: {str(r['error']).splitlines()[0]} |"
            )
            continue
        b, a = float(r["before"] or 0.0), float(r["after"] or 0.0)
        lines.append(
            f"| {r['stack']} | {r['why']} | {_fmt(r['before'], 'new')} | {_fmt(r['after'], 'removed')} | "
            f"{a - b:+.2f} |"
        )
    if not rows:
        lines.append("| (no stack's plan changes) | | | | |")
    return rows, "\n".join(lines)


def _fmt(value: float | None, missing: str) -> str:
    return f"({missing})" if value is None else f"{value:.2f}"

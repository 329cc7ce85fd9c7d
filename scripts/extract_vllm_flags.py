"""Extract the `vllm serve` flags and enum values of a vLLM wheel, statically (no torch, no GPU).

Produces tests/data/vllm-<version>.json, which the render tests check every rendered vLLM config against.
Usage: pip download vllm==0.33.0 --no-deps -d /tmp/w && python scripts/extract_vllm_flags.py /tmp/w/vllm-*.whl
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile
from pathlib import Path

FLAG_FILES = ("vllm/engine/arg_utils.py", "vllm/entrypoints/common/cli_args.py")
FRONTEND_CLASSES = {"BaseFrontendArgs", "FrontendArgs"}
LITERALS = {
    "quantization": ("vllm/model_executor/layers/quantization/__init__.py", "QuantizationMethods"),
    "kv-cache-dtype": ("vllm/config/cache.py", "CacheDType"),
    "performance-mode": ("vllm/config/vllm.py", "PerformanceMode"),
    "runner": ("vllm/config/scheduler.py", "RunnerType"),
    "convert": ("vllm/config/model.py", "ConvertType"),
    "dtype": ("vllm/config/model.py", "ModelDType"),
    "speculative-config.method": ("vllm/config/speculative.py", "SpeculativeMethod"),
}


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def flags(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            found |= {
                a.value[2:]
                for a in node.args
                if isinstance(a, ast.Constant) and str(a.value).startswith("--")
            }
        if isinstance(node, ast.ClassDef) and node.name in FRONTEND_CLASSES:
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    found.add(item.target.id.replace("_", "-"))
    return found


def literal(tree: ast.Module, name: str) -> list[str]:
    """The strings of a module-level Literal alias, following aliases it names in the same module."""
    aliases = {}
    for node in tree.body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if isinstance(target, ast.Name) and node.value is not None:
            aliases[target.id] = node.value
    if name not in aliases:
        raise SystemExit(f"{name} not found")
    values: set[str] = set()
    pending, seen = [name], set()
    while pending:
        current = pending.pop()
        seen.add(current)
        values |= set(_strings(aliases[current]))
        pending += [
            n.id
            for n in ast.walk(aliases[current])
            if isinstance(n, ast.Name) and n.id in aliases and n.id not in seen
        ]
    return sorted(values)


def main(wheel: str) -> None:
    version = re.search(r"vllm-([0-9.]+)-", Path(wheel).name)
    with zipfile.ZipFile(wheel) as zf:
        read = lambda p: ast.parse(zf.read(p).decode())  # noqa: E731
        all_flags: set[str] = set()
        for path in FLAG_FILES:
            all_flags |= flags(read(path))
        values = {flag: literal(read(path), name) for flag, (path, name) in LITERALS.items()}
    out = (
        Path(__file__).resolve().parent.parent
        / "tests"
        / "data"
        / f"vllm-{version.group(1) if version else 'unknown'}.json"
    )
    out.write_text(json.dumps({"flags": sorted(all_flags), "values": values}, indent=1) + "\n")
    print(f"wrote {out}: {len(all_flags)} flags")


if __name__ == "__main__":
    main(sys.argv[1])

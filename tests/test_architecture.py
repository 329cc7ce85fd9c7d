"""The package's shape, checked on every run: no import cycle anywhere, and the data plane
(agentcloud.gateway, agentcloud.upstream) reaches none of Pulumi, SSH, pydo, Jinja, the lifecycle, the control
plane or the CLI, even through another module. Every import counts: module level, inside functions, and under
TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "infra"  # the folder that holds the agentcloud package
PACKAGE = SOURCE / "agentcloud"
DATA_PLANE = ("agentcloud.gateway", "agentcloud.upstream")
FORBIDDEN = (
    "pulumi",
    "pulumi_digitalocean",
    "paramiko",
    "pydo",
    "jinja2",
    "agentcloud.lifecycle",
    "agentcloud.cli",
    "agentcloud.control",
    "agentcloud.compose",
    "agentcloud.remote",
    "agentcloud.render",
    "agentcloud.components",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names (a `from x import y` counts x, and x.y when y
    is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imports_of(path, name) if m in modules or not m.startswith("agentcloud")}
        for name, path in modules.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and modules importing themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def reachable(edges: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module reachable from ``start``, with the module that first imported it (for the message)."""
    seen: dict[str, str] = {start: ""}
    todo = [start]
    while todo:
        v = todo.pop()
        for w in edges.get(v, ()):
            if w not in seen:
                seen[w] = v
                todo.append(w)
    return seen


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_the_data_plane_imports_nothing_of_the_control_side() -> None:
    edges = graph()
    wrong = []
    for start in (m for m in edges if any(m == p or m.startswith(p + ".") for p in DATA_PLANE)):
        for module, via in reachable(edges, start).items():
            if any(module == f or module.startswith(f + ".") for f in FORBIDDEN):
                wrong.append(f"{start} reaches {module} (imported by {via})")
    assert wrong == []


def test_the_checks_can_fail() -> None:
    """The checker itself: a cycle and a forbidden path are found when they exist."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert "pulumi" in reachable(
        {"agentcloud.gateway.x": {"agentcloud.y"}, "agentcloud.y": {"pulumi"}}, "agentcloud.gateway.x"
    )
    assert imports_of(Path(__file__), "tests.test_architecture") >= {"ast", "pathlib", "pathlib.Path"}

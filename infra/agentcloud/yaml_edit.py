"""Edit values of a YAML file in place, keeping every comment, blank line and the layout around them.

Only what a program should change is supported: a scalar or one-line flow collection (``[a, b]``,
``{date: ..., via: ...}``) is replaced on its own line; a missing key is inserted at the end of its parent
mapping with the parent's indentation. Anything else (a value written across lines, a parent that is not a
block mapping) is refused with the file and line, to be edited by hand. Every edit is checked by parsing the
result again."""

from __future__ import annotations

import datetime
import re
from typing import Any

from agentcloud.document import KeyPath, parse_document
from agentcloud.errors import InfraError, format_path


class EditError(InfraError):
    """A value the editor cannot change without rewriting the file's layout."""


def flow(value: Any) -> str:
    """``value`` as one line of YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.1f}"
    if isinstance(value, (int, datetime.date)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./ ()+-]*[A-Za-z0-9_./)+-]", text) and not re.match(r"[-?]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def set_value(text: str, file: str, path: KeyPath, value: Any) -> str:
    """``text`` with the value at ``path`` (mapping keys only) set to ``value``."""
    doc = parse_document(text, file)
    lines = text.split("\n")
    rendered = flow(value)
    if path in doc.lines:
        n = doc.lines[path] - 1
        key = re.escape(str(path[-1]))
        m = re.match(rf"^(\s*(?:-\s+)?[\"']?{key}[\"']?\s*:[ \t]*)([^#]*?)([ \t]*#.*)?$", lines[n])
        if m is None or not m.group(2):
            raise EditError(
                f"{file}:{n + 1}: {format_path(path)} is not a one-line value; change it by hand to "
                f"{rendered}"
            )
        lines[n] = m.group(1) + rendered + (m.group(3) or "")
    else:
        parent = path[:-1]
        while parent and parent not in doc.lines:
            parent = parent[:-1]
        missing = path[len(parent) :]
        if parent:
            start = doc.lines[parent] - 1
            if not re.match(r"^\s*[^#]*:\s*(#.*)?$", lines[start]):
                raise EditError(
                    f"{file}:{start + 1}: {format_path(parent)} is not a block mapping; add "
                    f"{format_path(path)}: {rendered} by hand"
                )
            # the end of the parent's block: after its last descendant and that one's continuation lines
            last = max(v for k, v in doc.lines.items() if k[: len(parent)] == parent) - 1
            depth = _indent(lines[last])
            while last + 1 < len(lines) and lines[last + 1].strip() and _indent(lines[last + 1]) > depth:
                last += 1
            children = [v for k, v in doc.lines.items() if len(k) == len(parent) + 1 and k[:-1] == parent]
            step = _indent(lines[min(children) - 1]) - _indent(lines[start]) if children else 2
            indent, at = _indent(lines[start]) + step, last + 1
        else:
            step, indent = 2, 0
            at = len(lines) - 1 if lines and lines[-1] == "" else len(lines)
        new = [" " * (indent + i * step) + f"{key}:" for i, key in enumerate(missing[:-1])] + [
            " " * (indent + (len(missing) - 1) * step) + f"{missing[-1]}: {rendered}"
        ]
        lines[at:at] = new
    out = "\n".join(lines)
    check = parse_document(out, file)
    node: Any = check.data
    for part in path:
        node = node[part]
    if node != value and not (isinstance(value, tuple) and node == list(value)):
        raise EditError(f"{file}: setting {format_path(path)} to {rendered} would read back as {node!r}")
    return out

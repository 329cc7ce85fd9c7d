"""YAML documents that remember where each key came from.

``load_document`` parses with the C loader when available, refuses duplicate keys (PyYAML silently keeps the
last one, which would lose an edit), and records the line of every mapping key and sequence item so that
validation errors can point at ``file:line``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentcloud.errors import Problem, ValidationError

Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Document:
    """Parsed YAML data plus the line (1-based) of every key path in it."""

    file: str
    data: Any
    lines: Mapping[KeyPath, int] = field(default_factory=dict)
    origins: Mapping[KeyPath, str] = field(default_factory=dict)
    """Key paths whose value came from another file than ``file`` (an overlay; see ``overlay``)."""

    def origin_of(self, path: KeyPath) -> str:
        """The file that ``path`` (or its nearest ancestor with an origin) came from."""
        while True:
            if path in self.origins:
                return self.origins[path]
            if not path:
                return self.file
            path = path[:-1]

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def problem(self, path: KeyPath, message: str, **kw: Any) -> Problem:
        return Problem(file=self.origin_of(path), path=path, message=message, line=self.line_of(path), **kw)


def overlay(base: Document, top: Document) -> Document:
    """``top`` laid over ``base``: mappings merge key by key, any other value of ``top`` replaces the base's,
    and null in ``top`` for an entry that is a mapping in ``base`` (a gpu type, a model) removes it. Every key
    keeps its file and line, so a problem in the merged data points at the file that holds the offending
    value."""
    lines = dict(base.lines)
    origins = dict(base.origins)

    def take(path: KeyPath) -> None:  # the value at path is top's: its lines, its file
        for table in (lines, origins):
            for key in [k for k in table if k[: len(path)] == path]:
                del table[key]
        lines.update({k: v for k, v in top.lines.items() if k[: len(path)] == path})
        origins[path] = top.file

    def merge(under: Any, over: Any, path: KeyPath) -> Any:
        if not (isinstance(under, dict) and isinstance(over, dict)):
            take(path)
            return over
        out = dict(under)
        for key, value in over.items():
            child = (*path, key)
            if value is None and isinstance(out.get(key), dict):  # null removes an entry (a gpu type, ...)
                del out[key]
                for gone in [k for k in lines if k[: len(child)] == child]:
                    del lines[gone]
            elif key in out:
                out[key] = merge(out[key], value, child)
            else:
                take(child)
                out[key] = value
        return out

    data = merge(base.data, top.data if top.data is not None else {}, ())
    return Document(file=base.file, data=data, lines=lines, origins=origins)


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ValidationError(
                    [
                        Problem(
                            file=file,
                            path=(*path, key),
                            message=f"duplicate key (first defined on line {seen[key]})",
                            line=line,
                            fix="keep one definition; YAML would silently drop the first",
                        )
                    ]
                )
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, file)


MAX_NODES = 100_000  # a catalog or stack file has a few thousand; aliases that expand past this are refused


def _check_size(node: yaml.Node, file: str) -> None:
    """Refuse a document whose node tree, with its aliases expanded, is huge or endless (a recursive alias,
    or aliases of aliases: "billion laughs"), before anything walks it."""
    stack, count = [node], 0
    while stack:
        current = stack.pop()
        count += 1
        if count > MAX_NODES:
            message = (
                f"more than {MAX_NODES} values once its aliases are expanded (recursive or nested aliases?)"
            )
            raise ValidationError([Problem(file=file, path=(), message=message, fix="write the values out")])
        if isinstance(current, yaml.MappingNode):
            stack.extend(v for pair in current.value for v in pair)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def parse_document(text: str, file: str) -> Document:
    """Parse YAML text; syntax errors and duplicate keys become a ValidationError naming the line."""
    loader = Loader(text)
    try:  # one parse: the node tree gives the lines, the same tree is then constructed into data
        node = loader.get_single_node()
        if node is not None:
            _check_size(node, file)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ValidationError(
            [
                Problem(
                    file=file,
                    path=(),
                    message=f"not valid YAML: {exc.problem}",
                    line=mark.line + 1 if mark else None,
                    fix="check indentation and quoting around that line",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise ValidationError([Problem(file=file, path=(), message=f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _walk(node, (), lines, file)
    return Document(file=file, data=data, lines=lines)


def load_document(path: Path | str) -> Document:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError(
            [Problem(file=str(path), path=(), message="file not found", fix="check the path")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ValidationError(
            [Problem(file=str(path), path=(), message=f"not UTF-8 text ({exc.reason})")]
        ) from None
    return parse_document(text, str(path))

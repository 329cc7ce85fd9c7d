"""The one exception tree of the agentcloud package.

Every user-facing error says what was wrong, where (file and key path, with the line when known), what is
allowed, and how to fix it. The CLI prints ``str(error)``; nothing else is needed to act on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def format_path(path: Sequence[str | int]) -> str:
    """Render a key path as ``a.b[2].c``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, located precisely."""

    file: str
    path: tuple[str | int, ...]
    message: str
    value: object = None
    allowed: str | None = None
    fix: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        text = f"{where}: {format_path(self.path)}: {self.message}"
        if self.value is not None:
            text += f" (got {self.value!r})"
        if self.allowed:
            text += f"\n    allowed: {self.allowed}"
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text


class InfraError(Exception):
    """Base of every error this package raises on purpose."""


class ValidationError(InfraError):
    """One or more problems in a YAML input; all of them are reported at once."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class CatalogError(ValidationError):
    """presets.yaml is malformed or inconsistent."""


class SpecError(ValidationError):
    """A stack file's deployment is malformed or names things the catalog lacks."""


class PlanError(InfraError):
    """A valid deployment that cannot be served as asked (for example, the model does not fit)."""

    def __init__(self, message: str, alternatives: Sequence[object] = ()) -> None:
        self.alternatives = list(alternatives)
        super().__init__(message)


class RenderError(InfraError):
    """A template failed to render (a bug in a template or a plan field it lacks)."""


class LiveCheckError(InfraError):
    """DigitalOcean could not be asked about sizes and regions."""

"""Strict, frozen pydantic models for our own YAML files, and errors that point at file:line.

pydantic does the type checking; this module turns its errors into ``Problem``s that name the file, the key
path, the line, the bad value, what is allowed (the known keys, for an unknown key) and a fix.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict

from agentcloud.document import Document, KeyPath
from agentcloud.errors import Problem


class Strict(BaseModel):
    """Base of every model parsed from a file we own: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


M = TypeVar("M", bound=BaseModel)


def _unwrap(tp: Any) -> Any:
    """Strip Optional/Annotated so we can look inside a field's type."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the mapping at ``loc`` (for listing its allowed keys)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
            continue
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is dict:
            tp = args[1]
        elif origin in (list, tuple, frozenset, set) and args:
            tp = args[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _input_repr(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return None  # whole sub-trees are noise in a one-line message
    return value


PATTERNS = {
    r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$": "2 to 40 lowercase letters, digits and '-', starting with a letter "
    "and not ending with '-' (it names droplets and the stack), for example 'llama-8b-prod'",
    r"^[a-z0-9:_-]{1,255}$": "lowercase letters, digits, ':', '_' and '-' (a DigitalOcean tag)",
    r"^[a-z0-9][a-z0-9_.-]*$": "lowercase letters, digits, '_', '.' and '-', starting with a letter or digit",
    r"^https?://": "a URL starting with http:// or https://",
    r"^[A-Z][A-Z0-9_]*$": "an environment variable's name: capitals, digits and '_', for example MY_API_KEY",
    r"^[0-9a-fA-F]{64}$": "64 hexadecimal digits (a SHA-256 checksum)",
}
"""Every pattern a field of ours has, in words: a pattern mismatch says what is allowed, not the regex."""


def problems_from(
    exc: pydantic.ValidationError, model: type[BaseModel], doc: Document, base: KeyPath
) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path: KeyPath = (*base, *loc)
        kind = err["type"]
        allowed = fix = None
        value = _input_repr(err.get("input"))
        if kind == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            close: list[str] = []
            if owner is not None:
                allowed = ", ".join(owner.model_fields)
                close = difflib.get_close_matches(str(loc[-1]), list(owner.model_fields), n=1)
            message = "unknown key"
            value = None
            fix = f"did you mean '{close[0]}'?" if close else f"remove '{loc[-1]}' or correct its spelling"
        elif kind == "value_error":
            # our validators write "what; fix: how"
            text = err["msg"].removeprefix("Value error, ")
            message, _, fix_text = text.partition("; fix: ")
            fix = fix_text or None
        elif kind == "missing":
            message = "required key is missing"
            fix = f"add '{loc[-1]}'"
        else:
            message = err["msg"]
            ctx = err.get("ctx") or {}
            if "expected" in ctx:
                allowed = str(ctx["expected"])
            if "pattern" in ctx:
                message = "not a valid value here"
                allowed = PATTERNS.get(str(ctx["pattern"]), f"text matching {ctx['pattern']}")
                fix = "change it to a value of that form"
            elif allowed:
                fix = "change the value to one of the allowed ones"
            else:
                fix = f"change it: {message[0].lower() + message[1:]}"
        problems.append(doc.problem(path, message, value=value, allowed=allowed, fix=fix))
    return problems


def validate(model: type[M], data: Any, doc: Document, base: KeyPath = ()) -> tuple[M | None, list[Problem]]:
    """Validate ``data`` (found at ``base`` in ``doc``) as ``model``; never raises pydantic errors."""
    try:
        return model.model_validate(data), []
    except pydantic.ValidationError as exc:
        return None, problems_from(exc, model, doc, base)

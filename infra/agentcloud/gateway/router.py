"""Path and method to a route: static paths by dictionary, parameterised ones by pattern."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentcloud.gateway.asgi import Request
from agentcloud.gateway.errors import GatewayError

Handler = Callable[[Request], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    """A handler and what the middleware does before it: ``auth`` (a key is required), ``metered`` (the
    request counts against the key's requests/min), ``anthropic`` (errors in Anthropic's shape). ``body`` is
    the model its handler validates the request body against (or, for other media, a `schemas.Media`) and
    ``summary`` one line about it, ``ok`` its success status: they describe the API (openapi.py)."""

    handler: Handler
    auth: bool = True
    metered: bool = False
    anthropic: bool = False
    body: Any = None
    summary: str = ""
    ok: int = 200  # the status of success
    template: str = ""  # the path as registered (the `route` label of metrics)


class Router:
    """Routes by (method, path); ``match`` raises 404 for an unknown path and 405 for a known path's other
    methods."""

    def __init__(self) -> None:
        self.static: dict[tuple[str, str], Route] = {}
        self.dynamic: list[tuple[str, re.Pattern[str], Route]] = []
        self.anthropic_paths: set[str] = set()
        self.templates: list[tuple[str, str, Route]] = []  # (method, path as registered, route): every route

    def add(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        auth: bool = True,
        metered: bool = False,
        anthropic: bool = False,
        body: Any = None,
        summary: str = "",
        ok: int = 200,
    ) -> None:
        route = Route(handler, auth, metered, anthropic, body, summary, ok, path)
        self.templates.append((method, path, route))
        if anthropic:
            self.anthropic_paths.add(path)
        if "{" not in path:
            self.static[(method, path)] = route
        else:
            pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[A-Za-z0-9_.:-]{1,128})", path)
            self.dynamic.append((method, re.compile(f"^{pattern}$"), route))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        route = self.static.get((method, path))
        if route is not None:
            return route, {}
        allowed = any(p == path for (_, p) in self.static)
        for m, pattern, r in self.dynamic:
            found = pattern.match(path)
            if found:
                if m == method:
                    return r, found.groupdict()
                allowed = True
        if allowed:
            raise GatewayError(405, f"method {method} not allowed on {path}", code="method_not_allowed")
        raise GatewayError(404, f"no route {path}", code="unknown_route")

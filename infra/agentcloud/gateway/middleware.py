"""The data plane's pure ASGI middleware, outermost first:

errors (the one place exceptions become answers) -> routing (404/405) -> authentication (routes that need a
key) -> admission (requests/min on metered routes) -> accounting (settles every upstream call the handler
began) -> the route's handler.

Each layer is an ASGI application wrapping the next; the per-request `Request` travels in the scope.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import agentcloud.store.keys as keys
from agentcloud.gateway.accounting import Accountant, Admission
from agentcloud.gateway.asgi import Request, bearer_token, parse_headers
from agentcloud.gateway.cache import MISSING, TtlCache
from agentcloud.gateway.errors import HTTP_ERRORS, GatewayError, unauthorized
from agentcloud.gateway.metrics import CLIENT_CLOSED, UNMATCHED, Metrics
from agentcloud.gateway.router import Router
from agentcloud.store import Store, StoreUnavailable
from agentcloud.store.keys import KeyRecord
from agentcloud.store.offload import StoreThread

log = logging.getLogger("agentcloud.gateway")
App = Any  # an ASGI application: async (scope, receive, send) -> None
REQUEST = "agentcloud.request"
STORE_RETRY_S = 5


def request_of(scope: dict[str, Any]) -> Request:
    req: Request = scope[REQUEST]
    return req


class Errors:
    """Creates the request; turns errors into the client's error shape (OpenAI's, or Anthropic's on
    /v1/messages) unless the response has started; a client that went away is not an error. Counts every
    answer by route and status (401, 403 and 429 included)."""

    def __init__(self, app: App, router: Router, metrics: Metrics) -> None:
        self.app, self.router, self.metrics = app, router, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        req = Request(scope, receive, send, {}, anthropic=path in self.router.anthropic_paths)
        req.headers = parse_headers(scope)
        scope[REQUEST] = req
        try:
            await self.app(scope, receive, send)
        except HTTP_ERRORS as err:
            if not req.started:
                await req.error(GatewayError.of(err))
        except asyncio.CancelledError:
            if not req.disconnected:
                raise  # a real cancellation (shutdown), not a client that went away
        except StoreUnavailable:
            if not req.started:
                await req.error(
                    GatewayError(
                        503,
                        f"the gateway's store is unavailable; retry after {STORE_RETRY_S} seconds",
                        "api_error",
                        code="store_unavailable",
                        headers={"Retry-After": str(STORE_RETRY_S)},
                    )
                )
        except Exception:
            log.exception("unhandled error on %s %s (request %s)", scope["method"], path, req.request_id)
            if not req.started:
                await req.error(GatewayError(500, "internal error", "server_error", code="internal_error"))
        finally:
            req.stop_watching()
            route = scope.get("agentcloud.route")
            status = req.status or (CLIENT_CLOSED if req.disconnected else 0)
            self.metrics.responded(scope["method"], route.template if route else UNMATCHED, status)


class Routing:
    """Finds the route (404, 405) and the path's parameters."""

    def __init__(self, app: App, router: Router) -> None:
        self.app, self.router = app, router

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        req = request_of(scope)
        scope["agentcloud.route"], req.params = self.router.match(scope["method"], scope["path"])
        await self.app(scope, receive, send)


class Authenticator:
    """Bearer (or x-api-key) token -> key record: hashed with the pepper, looked up in a bounded TTL cache
    (negative answers too, so a flood of bad keys stays off the store), then in the store."""

    def __init__(
        self, store: Store, db: StoreThread, pepper: bytes, cache: TtlCache[str, KeyRecord | None]
    ) -> None:
        self.store, self.db, self.pepper, self.cache = store, db, pepper, cache

    async def __call__(self, req: Request) -> KeyRecord:
        token = bearer_token(req)
        if token is None:
            raise unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        digest = keys.digest(self.pepper, token)
        record = self.cache.get(digest, MISSING)
        if record is MISSING:
            if not keys.well_formed(token):  # a typo or a random string: no store lookup at all
                raise unauthorized("invalid API key")
            record = await self.db(self.store.key_by_hash, digest)
            self.cache.put(digest, record)
        if record is None:
            raise unauthorized("invalid API key")
        if not record.active():
            raise unauthorized("API key revoked or expired")
        assert isinstance(record, KeyRecord)
        return record


class Authentication:
    """Routes that need a key get ``req.key``; others pass through."""

    def __init__(self, app: App, authenticate: Authenticator) -> None:
        self.app, self.authenticate = app, authenticate

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["agentcloud.route"].auth:
            request_of(scope).key = await self.authenticate(request_of(scope))
        await self.app(scope, receive, send)


class AdmissionControl:
    """Metered routes count against the key's requests/min before anything else is spent."""

    def __init__(self, app: App, admission: Admission) -> None:
        self.app, self.admission = app, admission

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["agentcloud.route"].metered:
            await self.admission.admit(request_of(scope))
        await self.app(scope, receive, send)


class Accounting:
    """Settles every upstream call the handler began, whatever happened: the error's status, 499 for a client
    that went away, 500 for a bug. A call's usage is journaled before the response's last byte leaves, so a
    response the client received in full is metered even if the process is killed right after."""

    def __init__(self, app: App, accountant: Accountant) -> None:
        self.app, self.accountant = app, accountant

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        req = request_of(scope)
        req.before_last_byte = self.accountant.record_calls
        failed: int | None = None
        try:
            await self.app(scope, receive, send)
        except HTTP_ERRORS as err:
            failed = err.status
            raise
        except asyncio.CancelledError:
            failed = 499  # the client went away
            raise
        except BaseException:
            failed = 500
            raise
        finally:
            for call in req.calls:
                if failed is not None:
                    call.status = failed
                await self.accountant.settle(call)


async def endpoint(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The innermost application: the route's handler."""
    await scope["agentcloud.route"].handler(request_of(scope))

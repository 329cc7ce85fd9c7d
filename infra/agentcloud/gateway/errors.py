"""Gateway errors and their wire forms: OpenAI-style JSON, or Anthropic-style on /v1/messages."""

from __future__ import annotations

import orjson

from agentcloud.errors import InfraError
from agentcloud.upstream.errors import UpstreamError

ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


class DataPlaneError(InfraError):
    """Base of the data plane's errors."""


class RoutesError(DataPlaneError):
    """A routes file that cannot be read or holds a malformed entry."""


class GatewayError(DataPlaneError):
    """An answer other than 2xx: status, OpenAI-style type and code, the parameter at fault, extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    @staticmethod
    def of(err: GatewayError | UpstreamError) -> GatewayError:
        """The data plane's form of an error raised by either package."""
        if isinstance(err, GatewayError):
            return err
        return GatewayError(
            err.status, err.message, err.type, code=err.code, param=err.param, headers=err.headers
        )

    def openai_body(self) -> bytes:
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )

    def anthropic_body(self) -> bytes:
        kind = ANTHROPIC_TYPES.get(
            self.status, "api_error" if self.status >= 500 else "invalid_request_error"
        )
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": self.message}})


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code=code, param=param)


def unauthorized(message: str = "Missing or invalid API key.") -> GatewayError:
    return GatewayError(401, message, "authentication_error", code="invalid_api_key")


def forbidden(message: str) -> GatewayError:
    return GatewayError(403, message, "permission_error", code="forbidden")


def not_found(message: str, code: str = "not_found") -> GatewayError:
    return GatewayError(404, message, "invalid_request_error", code=code)


HTTP_ERRORS = (GatewayError, UpstreamError)
"""Errors that are answers: the error middleware turns them into the client's error shape."""

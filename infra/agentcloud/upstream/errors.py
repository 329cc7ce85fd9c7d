"""The upstream package's exception tree. Each error carries the HTTP answer it stands for, so the data plane
can turn it into the client's error shape without knowing where it came from."""

from __future__ import annotations

from agentcloud.errors import InfraError


class UpstreamError(InfraError):
    """Base: a status, an OpenAI-style type and code, the parameter at fault, and headers (Retry-After)."""

    status = 502
    type = "upstream_error"

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status or type(self).status
        self.code = code
        self.param = param
        self.headers = headers or {}


class UpstreamUnavailable(UpstreamError):
    """No target could answer: 502, 503 (every circuit open, or nothing serves the model), 504 (timeout)."""


class TranslationError(UpstreamError):
    """A request that cannot be translated to the upstream's format: the caller's fault (400)."""

    status = 400
    type = "invalid_request_error"


class UpstreamProtocolError(UpstreamError, OSError):
    """The upstream sent something that is not HTTP/1.1, or closed the connection mid-response (retryable,
    like any OSError before the first byte)."""

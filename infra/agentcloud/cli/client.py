"""The gateway's management API over HTTP for the CLI: every failure ends the command with one line."""

from __future__ import annotations

from typing import Any

import requests

API = "/api/v1/public/deployments"


class Client:
    """The management API over HTTP, errors turned into one line for people."""

    def __init__(self, url: str, key: str, api: str = API) -> None:
        self.url, self.key, self.api = url.rstrip("/"), key, api

    def call(self, method: str, path: str = "", **kw: Any) -> dict[str, Any]:
        resp = self.request(method, path, **kw)
        try:
            return dict(resp.json()) if resp.content else {}
        except ValueError:
            raise SystemExit(
                f"error: {self.url} answered {resp.status_code} with something that is not the "
                "gateway's JSON; check AGENTCLOUD_URL"
            ) from None

    def request(
        self, method: str, path: str = "", headers: dict[str, str] | None = None, **kw: Any
    ) -> requests.Response:
        """The raw answer of a call that succeeded (2xx); anything else ends the command with one line."""
        try:
            resp = requests.request(
                method,
                f"{self.url}{self.api}{path}",
                headers={"Authorization": f"Bearer {self.key}", **(headers or {})},
                timeout=kw.pop("timeout", 30),
                **kw,
            )
        except requests.ConnectionError:
            raise SystemExit(
                f"error: cannot reach the gateway at {self.url}; start it (`agentcloud gateway serve`) "
                "or point AGENTCLOUD_URL (or --url) at it"
            ) from None
        except requests.Timeout:
            raise SystemExit(
                f"error: the gateway at {self.url} did not answer within 30 s; try again"
            ) from None
        if resp.status_code >= 400:
            try:
                message = (resp.json().get("error") or {}).get("message", resp.text)
            except (ValueError, AttributeError):
                message = resp.text[:200] or resp.reason
            raise SystemExit(f"error: {resp.status_code}: {message}")
        return resp

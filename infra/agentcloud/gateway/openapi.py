"""The gateway's API contract: an OpenAPI 3.1 document built from the router (every route, as registered) and
the request models its handlers validate against (agentcloud.gateway.schemas, agentcloud.spec), with the error
shapes; and a plain HTML page of it for people. Served at /openapi.json and /docs."""

from __future__ import annotations

import html
import re
from typing import Any

from pydantic import BaseModel

from agentcloud.gateway.router import Route, Router
from agentcloud.gateway.schemas import UPLOAD_CHUNK, AnthropicErrorResponse, ErrorResponse, Media

REF = "#/components/schemas/{model}"
PATH_PARAM = "^[A-Za-z0-9_.:-]{1,128}$"  # what the router matches
ERRORS = {
    "400": "The request is malformed (the error names the field)",
    "401": "Missing, unknown, revoked or expired API key",
    "403": "The key may not do this (plan, scope, role)",
    "404": "No such object, or one of another org",
    "409": "The object's state does not allow it now",
    "413": "The body is too large",
    "422": "Well formed, but cannot be done (does not fit, invalid GGUF)",
    "429": "A rate, token or concurrency limit (see Retry-After)",
    "503": "Temporarily unavailable (see Retry-After)",
}


def _schema_of(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _request_body(body: Any, components: dict[str, Any]) -> dict[str, Any] | None:
    if body is None:
        return None
    if isinstance(body, Media):
        if not body.fields:
            schema: dict[str, Any] = {"type": "string", "format": "binary"}
        else:
            schema = {
                "type": "object",
                "properties": {
                    name: {"type": "string", "format": "binary"} if kind == "binary" else {"type": "string"}
                    for name, kind in body.fields.items()
                },
                "required": list(body.required),
            }
        return {"required": True, "content": {body.content_type: {"schema": schema}}}
    return {"required": True, "content": {"application/json": {"schema": _schema_of(body, components)}}}


def _operation(method: str, path: str, route: Route, components: dict[str, Any]) -> dict[str, Any]:
    error_ref = {"$ref": REF.format(model="AnthropicErrorResponse" if route.anthropic else "ErrorResponse")}
    responses: dict[str, Any] = {str(route.ok): {"description": "Success"}}
    for status, why in ERRORS.items():
        responses[status] = {"description": why, "content": {"application/json": {"schema": error_ref}}}
    op: dict[str, Any] = {
        "summary": route.summary or f"{method} {path}",
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method.lower()}_{path}").strip("_"),
        "responses": responses,
    }
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": PATH_PARAM}}
        for name in re.findall(r"\{(\w+)\}", path)
    ]
    if route.body is UPLOAD_CHUNK:
        offset = {"type": "integer", "minimum": 0}
        params.append({"name": "Upload-Offset", "in": "header", "required": True, "schema": offset})
    if params:
        op["parameters"] = params
    body = _request_body(route.body, components)
    if body is not None:
        op["requestBody"] = body
    if not route.auth:
        op["security"] = []
    if route.metered:
        op["tags"] = ["inference"]
    elif "/deployments" in path or "/models/upload" in path:
        op["tags"] = ["management"]
    else:
        op["tags"] = ["catalog and metrics"]
    return op


def document(router: Router, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route ``router`` serves."""
    components: dict[str, Any] = {}
    _schema_of(ErrorResponse, components)
    _schema_of(AnthropicErrorResponse, components)
    paths: dict[str, dict[str, Any]] = {}
    for method, path, route in router.templates:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, route, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agentcloud gateway",
            "version": version,
            "description": "One OpenAI- and Anthropic-compatible endpoint for every model: serverless "
            "providers and dedicated GPU deployments, with the management API of those deployments.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An agentcloud API key"},
                "x-api-key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{"bearer": []}, {"x-api-key": []}],
        "paths": dict(sorted(paths.items())),
    }


def page(doc: dict[str, Any]) -> str:
    """A plain HTML page of the document: every route, what it takes, what it answers (no scripts)."""
    rows = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            body: dict[str, Any] = op.get("requestBody", {}).get("content", {})
            kinds = ", ".join(body) or "-"
            first: dict[str, Any] = next(iter(body.values()), {})
            ref = str(first.get("schema", {}).get("$ref", ""))
            model = ref.rsplit("/", 1)[-1]
            fields = (
                ", ".join(doc["components"]["schemas"].get(model, {}).get("properties", {})) if model else ""
            )
            rows.append(
                f"<tr><td><code>{html.escape(method.upper())}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}</td><td>{html.escape(kinds)}"
                f"{'<br><small>' + html.escape(fields) + '</small>' if fields else ''}</td>"
                f"<td>{html.escape(', '.join(op['responses']))}</td></tr>"
            )
    title = html.escape(doc["info"]["title"])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}</style></head><body>"
        f"<h1>{title} {html.escape(doc['info']['version'])}</h1>"
        f"<p>{html.escape(doc['info']['description'])}</p>"
        "<p>Authenticate with <code>Authorization: Bearer &lt;key&gt;</code> (or <code>x-api-key</code>). "
        'Errors: <code>{"error": {"message", "type", "param", "code"}}</code>, '
        "Anthropic's shape on "
        "<code>/v1/messages</code>. The machine-readable contract: <a href='/openapi.json'>/openapi.json</a>."
        "</p><table><tr><th>method</th><th>path</th><th>what</th><th>body</th><th>answers</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )

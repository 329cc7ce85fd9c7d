"""Chat completions (OpenAI format) and Anthropic messages: validation, target choice, the upstream call."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from agentcloud.catalog import ApiFormat, Catalog, Task
from agentcloud.gateway import authz
from agentcloud.gateway.accounting import Admission, Call
from agentcloud.gateway.asgi import Request
from agentcloud.gateway.config import GatewayConfig
from agentcloud.gateway.errors import GatewayError, bad_request, not_found
from agentcloud.gateway.routing import Deployment, RouteTable
from agentcloud.gateway.schemas import ChatRequest, MessagesRequest, parse
from agentcloud.gateway.sync import Waker, hold_seconds
from agentcloud.records import Status
from agentcloud.upstream import anthropic
from agentcloud.upstream.proxy import Opened, Upstreams, anthropic_headers, openai_headers
from agentcloud.upstream.sse import UsageFilter, UsageScanner, sse_events
from agentcloud.upstream.target import Target

STREAM_ERRORS = (TimeoutError, OSError)


@dataclass(frozen=True)
class Serving:
    """What the inference handlers need, and nothing more."""

    routes: RouteTable
    catalog: Catalog
    upstreams: Upstreams
    admission: Admission
    waker: Waker
    config: GatewayConfig


ServingHandler = Callable[[Serving, Request], Awaitable[None]]


def chat_fields(body: dict[str, Any], default_max_tokens: int) -> tuple[str | None, bool, int]:
    """(model, stream, max tokens) of a chat request, validated in one step against `ChatRequest`: every
    parameter it forwards has its type checked, so a malformed request is a 400 here, never an upstream's
    error or a 5xx."""
    parsed = parse(ChatRequest, body)
    return (
        parsed.model,
        parsed.stream,
        parsed.max_completion_tokens or parsed.max_tokens or default_max_tokens,
    )


async def resolve_model(
    ctx: Serving, req: Request, model: str | None
) -> tuple[list[Target], Deployment | None]:
    """A model's targets, or a `byom:` model's deployment (the caller's own or granted one)."""
    key = req.caller
    if not model:
        raise bad_request("model: required", param="model")
    if model.startswith("byom:"):  # names are unique per org: the caller's own (or granted) deployment wins
        error: GatewayError = not_found(
            f"model {model} does not exist or is not served here", code="model_not_found"
        )
        for candidate in (d for d in ctx.routes.deployments.values() if d.model_id == model):
            try:
                dep = authz.invoke_deployment(req.caller, candidate, model)
            except GatewayError as err:
                error = err if err.status == 403 else error
                continue
            return await deployment_targets(ctx, req, dep)
        raise error
    if model not in ctx.routes.models:
        missing = ctx.routes.unconfigured.get(model)
        if missing:
            raise not_found(
                f"model {model} is served by providers whose API key is not configured: set "
                f"{' or '.join(sorted(set(missing)))} in the gateway's environment",
                code="provider_not_configured",
            )
        raise not_found(f"model {model} does not exist or is not served here", code="model_not_found")
    authz.invoke_model(key, ctx.catalog, model)
    return ctx.routes.models[model], None


async def deployment_targets(ctx: Serving, req: Request, dep: Deployment) -> tuple[list[Target], Deployment]:
    """The deployment's engines. One scaled to zero is woken (one wake however many requests ask) and the
    request held while it wakes, up to X-AgentCloud-Wake-Timeout seconds; past that, 503 with Retry-After."""
    if dep.targets and dep.status.serving:  # running replicas keep serving
        return list(dep.targets), dep
    if dep.status is Status.INACTIVE and dep.wakeable:
        hold = hold_seconds(
            req.header(b"x-agentcloud-wake-timeout"), ctx.config.wake_hold_s, ctx.config.wake_hold_max_s
        )
        woken = await ctx.waker.wake(dep, hold)
        if woken is not None:
            return list(woken.targets), woken
    raise GatewayError(
        503,
        f"deployment {dep.id} has no running replicas yet (status {dep.status}); retry shortly",
        "upstream_error",
        code="deployment_unavailable",
        headers={"Retry-After": "30"},
    )


async def with_call(
    ctx: Serving,
    req: Request,
    model_id: str,
    dep: Deployment | None,
    estimate: int,
    run: Callable[[Call], Awaitable[None]],
) -> None:
    """Admission (tokens/min, deployment concurrency), then ``run(call)``; the accounting middleware settles
    the call on every exit."""
    await run(await ctx.admission.begin(req, model_id, dep, estimate))


def _error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    except orjson.JSONDecodeError:
        pass
    return body[:300].decode("utf-8", "replace") or "upstream refused the request"


async def pass_upstream_error(req: Request, opened: Opened, call: Call) -> None:
    status = opened.response.status
    if status in (401, 403):  # the upstream refused the gateway's own credentials: not the caller's fault
        call.status = 502
        raise GatewayError(
            502,
            f"upstream {opened.target.name} rejected the gateway's credentials ({status})",
            "upstream_error",
            code="upstream_auth",
        )
    call.status = status
    if req.anthropic or opened.target.format is not ApiFormat.OPENAI:
        raise GatewayError(status, _error_message(opened.first), code="upstream_rejected")
    await req.respond(
        status, opened.first, opened.response.headers.get("content-type", "application/json").encode()
    )


async def stream_error(req: Request, call: Call, exc: BaseException, anthropic_format: bool) -> None:
    call.status = 504 if isinstance(exc, TimeoutError) else 502
    message = f"upstream stream failed after the response started: {type(exc).__name__}"
    if anthropic_format:
        await req.write(anthropic.StreamTranslator.error(message), more=False)
    else:
        err = {"error": {"message": message, "type": "upstream_error", "code": "stream_interrupted"}}
        await req.write(b"data: " + orjson.dumps(err) + b"\n\n", more=False)


# -- OpenAI chat completions -----------------------------------------------------------------------------
async def chat(ctx: Serving, req: Request) -> None:
    body = await req.json_object(ctx.config.max_body_bytes)
    model, stream, max_tokens = chat_fields(body, ctx.config.default_max_tokens)
    _generative(ctx, model)
    targets, dep = await resolve_model(ctx, req, model)
    await _chat(ctx, req, body, str(model), targets, dep, stream, max_tokens)


def same_model(dep: Deployment, model: str | None) -> None:
    """A deployment route serves its own model: another model name is a mistake, not a request to reroute."""
    if model is not None and model not in (dep.model_id, dep.name):
        raise bad_request(
            f"model: deployment {dep.id} serves {dep.model_id}, not {model}; omit model or use its name",
            param="model",
            code="model_mismatch",
        )


def _generative(ctx: Serving, model: str | None) -> None:
    """Chat and messages need a generative model: an embedding model there is the caller's mistake (400)."""
    known = ctx.catalog.models.get(model or "")
    if known is not None and known.task is not Task.GENERATE:
        raise bad_request(
            f"model {model} is a {known.task.value} model, not a chat model; call its own route",
            param="model",
        )


async def chat_deployment(ctx: Serving, req: Request) -> None:
    dep_id = req.params["deployment_id"]
    dep = authz.invoke_deployment(req.caller, ctx.routes.deployments.get(dep_id), dep_id)
    body = await req.json_object(ctx.config.max_body_bytes)
    model, stream, max_tokens = chat_fields(body, ctx.config.default_max_tokens)
    same_model(dep, model)
    targets, dep = await deployment_targets(ctx, req, dep)
    await _chat(ctx, req, body, dep.model_id, targets, dep, stream, max_tokens)


async def chat_org(ctx: Serving, req: Request) -> None:
    dep_id, org_id = req.params["deployment_id"], req.params["org_id"]
    dep = authz.invoke_org_deployment(req.caller, org_id, ctx.routes.deployments.get(dep_id), dep_id)
    body = await req.json_object(ctx.config.max_body_bytes)
    model, stream, max_tokens = chat_fields(body, ctx.config.default_max_tokens)
    same_model(dep, model)
    targets, dep = await deployment_targets(ctx, req, dep)
    await _chat(ctx, req, body, dep.model_id, targets, dep, stream, max_tokens)


async def _chat(
    ctx: Serving,
    req: Request,
    body: dict[str, Any],
    model_id: str,
    targets: list[Target],
    dep: Deployment | None,
    stream: bool,
    max_tokens: int,
) -> None:
    usable = [t for t in targets if t.format is ApiFormat.OPENAI]
    usable, held = ctx.routes.spread(ctx.upstreams.balancer, model_id, usable, dep, body.get("messages"))
    if targets and not usable:
        raise bad_request(
            f"{model_id} is served in Anthropic's format: call POST /v1/messages", param="model"
        )
    options = body.get("stream_options")
    asked_usage = isinstance(options, dict) and options.get("include_usage") is True

    def build(t: Target) -> tuple[str, bytes, dict[str, str]]:
        if body.get("model") == t.upstream_model and (not stream or asked_usage):
            payload = req.raw  # unchanged: forward the bytes as received
        else:
            out = {**body, "model": t.upstream_model}
            if stream and not asked_usage:  # always metered: the usage is asked for, and kept from the client
                out["stream_options"] = {
                    **(options if isinstance(options, dict) else {}),
                    "include_usage": True,
                }
            payload = orjson.dumps(out)
        return t.base_url + "/chat/completions", payload, openai_headers(t)

    async def run(call: Call) -> None:
        opened = await ctx.upstreams.open(usable, build, stream, held, ctx.config.routing_hold_s)
        call.target = opened.target
        try:
            if opened.response.status >= 400:
                await pass_upstream_error(req, opened, call)
            elif stream:
                await _pipe_openai(ctx, req, opened, call, None if asked_usage else UsageFilter())
            else:
                call.ttft_s = (
                    time.perf_counter() - call.started_s
                )  # non-streaming: the first byte is the answer
                _usage_from_json(opened.first, call)
                await req.respond(200, opened.first)
        finally:
            opened.close()

    await with_call(ctx, req, model_id, dep, len(req.raw) // 4 + max_tokens, run)


def _usage_from_json(body: bytes, call: Call) -> None:
    try:
        usage = orjson.loads(body).get("usage") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return
    call.prompt_tokens = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
    call.completion_tokens = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)


async def _pipe_openai(
    ctx: Serving, req: Request, opened: Opened, call: Call, strip: UsageFilter | None
) -> None:
    """Relay an OpenAI stream; its usage is metered whatever happens: from the upstream's usage event, or,
    when the stream stops before it (the client left, the upstream broke), from what was relayed."""
    scanner = UsageScanner()
    await req.start(200, b"text/event-stream", [(b"cache-control", b"no-cache")])
    call.ttft_s = time.perf_counter() - call.started_s
    scanner.feed(opened.first)
    await req.write(strip.feed(opened.first) if strip else opened.first)
    try:
        async for chunk in ctx.upstreams.chunks(opened):
            scanner.feed(chunk)
            await req.write(strip.feed(chunk) if strip else chunk)
        if strip:
            await req.write(strip.flush())
    except STREAM_ERRORS as exc:
        await stream_error(req, call, exc, anthropic_format=False)
        return
    finally:
        if scanner.prompt_tokens or scanner.completion_tokens:
            call.prompt_tokens, call.completion_tokens = scanner.prompt_tokens, scanner.completion_tokens
        else:  # no usage event: count what was relayed, never zero
            call.prompt_tokens, call.completion_tokens = len(req.raw) // 4, scanner.deltas
    if not scanner.done:  # the upstream closed without [DONE]: a truncated stream, not a clean end
        await stream_error(
            req, call, ConnectionResetError("stream ended without [DONE]"), anthropic_format=False
        )
        return
    await req.write(b"", more=False)


# -- Anthropic messages ------------------------------------------------------------------------------------
async def messages(ctx: Serving, req: Request) -> None:
    body = await req.json_object(ctx.config.max_body_bytes)
    model = parse(MessagesRequest, body).model
    template = anthropic.to_openai(body, model)  # validates the whole request before anything is spent
    _generative(ctx, model)
    targets, dep = await resolve_model(ctx, req, model)
    targets, held = ctx.routes.spread(
        ctx.upstreams.balancer, model, targets, dep, body.get("messages"), body.get("system")
    )
    stream = bool(template.get("stream"))
    stops = list(template.get("stop", []))

    def build(t: Target) -> tuple[str, bytes, dict[str, str]]:
        if t.format is ApiFormat.ANTHROPIC:
            return (
                t.base_url + "/v1/messages",
                orjson.dumps({**body, "model": t.upstream_model}),
                anthropic_headers(t, req.header(b"anthropic-version") or ctx.config.anthropic_version),
            )
        return (
            t.base_url + "/chat/completions",
            orjson.dumps({**template, "model": t.upstream_model}),
            openai_headers(t),
        )

    async def run(call: Call) -> None:
        opened = await ctx.upstreams.open(targets, build, stream, held, ctx.config.routing_hold_s)
        call.target = opened.target
        try:
            if opened.response.status >= 400:
                await pass_upstream_error(req, opened, call)
            elif opened.target.format is ApiFormat.ANTHROPIC:
                await _pass_anthropic(ctx, req, opened, call, stream)
            elif stream:
                await _translate_stream(ctx, req, opened, call, model, stops)
            else:
                try:
                    data = orjson.loads(opened.first)
                except orjson.JSONDecodeError:
                    raise GatewayError(502, "upstream answered with invalid JSON", "upstream_error") from None
                out = anthropic.from_openai(data, model, stops)
                call.prompt_tokens = out["usage"]["input_tokens"]
                call.completion_tokens = out["usage"]["output_tokens"]
                await req.json(out)
        finally:
            opened.close()

    await with_call(ctx, req, model, dep, len(req.raw) // 4 + int(body["max_tokens"]), run)


async def _translate_stream(
    ctx: Serving, req: Request, opened: Opened, call: Call, model: str, stops: list[str]
) -> None:
    translator = anthropic.StreamTranslator(model=model, stop_sequences=stops)
    buffer = bytearray()
    done = False
    await req.start(200, b"text/event-stream", [(b"cache-control", b"no-cache")])
    call.ttft_s = time.perf_counter() - call.started_s

    async def consume(chunk: bytes) -> bool:
        for payload in sse_events(buffer, chunk):
            if payload == b"[DONE]":
                return True
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict) and data.get("error"):
                raise ConnectionResetError(str(data["error"])[:200])
            out = translator.feed(data)
            if out:
                await req.write(out)
        return False

    try:
        done = await consume(opened.first)
        if not done:
            async for chunk in ctx.upstreams.chunks(opened):
                if await consume(chunk):
                    done = True
                    break
    except STREAM_ERRORS as exc:
        await stream_error(req, call, exc, anthropic_format=True)
        return
    finally:
        call.prompt_tokens, call.completion_tokens = translator.input_tokens, translator.output_tokens
    if not done:
        await stream_error(
            req, call, ConnectionResetError("stream ended without [DONE]"), anthropic_format=True
        )
        return
    await req.write(translator.finish_stream(), more=False)


async def _pass_anthropic(ctx: Serving, req: Request, opened: Opened, call: Call, stream: bool) -> None:
    if not stream:
        data = orjson.loads(opened.first)
        usage = data.get("usage") or {}
        call.prompt_tokens, call.completion_tokens = (
            usage.get("input_tokens", 0),
            usage.get("output_tokens", 0),
        )
        await req.respond(200, opened.first)
        return
    buffer = bytearray()
    await req.start(200, b"text/event-stream", [(b"cache-control", b"no-cache")])
    call.ttft_s = time.perf_counter() - call.started_s
    stopped = False

    def scan(chunk: bytes) -> bool:
        end = False
        for payload in sse_events(buffer, chunk):
            if b'"usage"' in payload:
                event = orjson.loads(payload)
                usage = (event.get("message") or {}).get("usage") or event.get("usage") or {}
                call.prompt_tokens = usage.get("input_tokens", call.prompt_tokens)
                call.completion_tokens = usage.get("output_tokens", call.completion_tokens)
            end = end or b'"message_stop"' in payload
        return end

    try:
        stopped = scan(opened.first)
        await req.write(opened.first)
        async for chunk in ctx.upstreams.chunks(opened):
            stopped = scan(chunk) or stopped
            await req.write(chunk)
    except STREAM_ERRORS as exc:
        await stream_error(req, call, exc, anthropic_format=True)
        return
    if not stopped:
        await stream_error(
            req, call, ConnectionResetError("stream ended without message_stop"), anthropic_format=True
        )
        return
    await req.write(b"", more=False)

"""Embeddings, rerank, speech to text and text to speech: OpenAI-format upstreams, the spec's shapes."""

from __future__ import annotations

import re
import secrets
from typing import Any

import orjson

from agentcloud.catalog import ApiFormat, Task
from agentcloud.gateway import authz
from agentcloud.gateway.accounting import Call
from agentcloud.gateway.asgi import Request
from agentcloud.gateway.errors import GatewayError, bad_request
from agentcloud.gateway.inference import (
    Serving,
    deployment_targets,
    pass_upstream_error,
    resolve_model,
    same_model,
    with_call,
)
from agentcloud.gateway.multipart import MultipartReader
from agentcloud.gateway.routing import Deployment
from agentcloud.gateway.schemas import (
    TRANSCRIPTION_FORM,
    EmbeddingsRequest,
    RerankRequest,
    SpeechRequest,
    parse,
)
from agentcloud.upstream.proxy import RequestBuilder, openai_headers
from agentcloud.upstream.target import Target

_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$")
DEFAULT_MODELS = {
    Task.EMBED: "bge-m3",
    Task.RERANK: "bge-reranker-v2-m3",
    Task.TRANSCRIBE: "whisper-large-v3-turbo",
    Task.SPEECH: "minimax-speech-02-hd",
}


def _model(ctx: Serving, value: Any, task: Task) -> str:
    if value is None:
        return DEFAULT_MODELS[task]
    if not isinstance(value, str) or not value:
        raise bad_request("model: must be a non-empty string", param="model")
    known = ctx.catalog.models.get(value)
    if known is not None and known.task is not task:
        raise bad_request(f"model {value} is a {known.task.value} model, not {task.value}", param="model")
    return value


def _openai_targets(targets: list[Target]) -> list[Target]:
    return [t for t in targets if t.format is ApiFormat.OPENAI]


Resolved = tuple[list[Target], Deployment | None]


async def _forward(
    ctx: Serving,
    req: Request,
    model: str,
    estimate: int,
    build: RequestBuilder,
    default_type: str,
    resolved: Resolved | None = None,
) -> tuple[bytes, str] | None:
    """One non-streaming call (fallback, limits, accounting): the upstream's body and content type, or None
    when an upstream error has already been answered. ``resolved``: a deployment route's own targets."""
    targets, dep = resolved or await resolve_model(ctx, req, model)
    result: dict[str, tuple[bytes, str]] = {}

    async def run(call: Call) -> None:
        spread, _ = ctx.routes.spread(ctx.upstreams.balancer, model, _openai_targets(targets), dep)
        opened = await ctx.upstreams.open(spread, build, stream=False)
        call.target = opened.target
        try:
            if opened.response.status >= 400:
                await pass_upstream_error(req, opened, call)
                return
            try:
                usage = orjson.loads(opened.first).get("usage") or {}
                call.prompt_tokens = int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                pass  # audio and other non-JSON answers carry no usage
            result["out"] = (opened.first, opened.response.headers.get("content-type", default_type))
        finally:
            opened.close()

    await with_call(ctx, req, model, dep, estimate, run)
    return result.get("out")


async def _json_call(
    ctx: Serving,
    req: Request,
    model: str,
    path: str,
    payload: dict[str, Any],
    estimate: int,
    resolved: Resolved | None = None,
) -> bytes | None:
    """POST ``payload`` (model rewritten per target) to ``path``; returns the upstream's JSON body."""

    def build(t: Target) -> tuple[str, bytes, dict[str, str]]:
        return t.base_url + path, orjson.dumps({**payload, "model": t.upstream_model}), openai_headers(t)

    out = await _forward(ctx, req, model, estimate, build, "application/json", resolved)
    return out[0] if out else None


def _embedding_payload(body: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(model, what is forwarded) of an embeddings request."""
    parsed = parse(EmbeddingsRequest, body)
    return parsed.model, parsed.model_dump(exclude_none=True, exclude={"model"})


async def embeddings(ctx: Serving, req: Request) -> None:
    body = await req.json_object(ctx.config.max_body_bytes)
    asked, payload = _embedding_payload(body)
    model = _model(ctx, asked, Task.EMBED)
    out = await _json_call(ctx, req, model, "/embeddings", payload, len(req.raw) // 4)
    if out is not None:
        await req.respond(200, out)


async def embeddings_deployment(ctx: Serving, req: Request) -> None:
    """Embeddings from a dedicated deployment of an embedding model (an OpenAI SDK whose base URL is
    `.../deployments/{id}` calls it as `client.embeddings.create`)."""
    dep_id = req.params["deployment_id"]
    dep = authz.invoke_deployment(req.caller, ctx.routes.deployments.get(dep_id), dep_id)
    body = await req.json_object(ctx.config.max_body_bytes)
    model, payload = _embedding_payload(body)
    same_model(dep, model)
    known = ctx.catalog.models.get(dep.model_id)
    if known is not None and known.task is not Task.EMBED:
        raise bad_request(
            f"deployment {dep.id} serves {dep.model_id}, a {known.task.value} model", param="model"
        )
    resolved = await deployment_targets(ctx, req, dep)
    out = await _json_call(ctx, req, dep.model_id, "/embeddings", payload, len(req.raw) // 4, resolved)
    if out is not None:
        await req.respond(200, out)


async def rerank(ctx: Serving, req: Request) -> None:
    parsed = parse(RerankRequest, await req.json_object(ctx.config.max_body_bytes))
    query = parsed.query
    texts = [d if isinstance(d, str) else d.text for d in parsed.documents]
    model = _model(ctx, parsed.model, Task.RERANK)
    limit = parsed.top_n or len(texts)
    payload = {"query": query, "documents": texts, "top_n": limit}
    out = await _json_call(ctx, req, model, "/rerank", payload, sum(len(t) for t in texts) // 4)
    if out is None:
        return
    try:
        data = orjson.loads(out)
        results = []
        for r in data.get("results") or []:
            idx = int(r["index"])
            score = float(r.get("relevance_score", r.get("score", 0.0)))
            results.append({"index": idx, "relevance_score": score, "document": texts[idx]})
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError, IndexError):
        raise GatewayError(
            502, "upstream answered rerank with an unexpected shape", "upstream_error"
        ) from None
    results.sort(key=lambda r: -float(r["relevance_score"]))  # type: ignore[arg-type]
    await req.json({"object": "list", "model": model, "results": results[:limit], "usage": data.get("usage")})


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def encode_multipart(fields: dict[str, str], file: tuple[str, str, str, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body: text fields, then one file part."""
    boundary = secrets.token_hex(16)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(k)}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    name, filename, content_type, data = file
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"; '
        f'filename="{_quote(filename)}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


async def transcriptions(ctx: Serving, req: Request) -> None:
    audio_buffer = bytearray()
    form = MultipartReader(
        req.header(b"content-type") or "", "file", audio_buffer.extend, max_field_bytes=4096
    )
    form.feed(await req.body(ctx.config.max_upload_bytes))  # capped; audio is at most a few tens of MB
    form.finish()
    if not form.files or not audio_buffer:
        raise bad_request("file: required, the audio to transcribe", param="file")
    unknown = sorted(set(form.fields) - set(TRANSCRIPTION_FORM.fields))
    if unknown:
        raise bad_request(
            f"unsupported form field: {unknown[0]!r}", param=unknown[0], code="unsupported_parameter"
        )
    model = _model(ctx, form.fields.get("model"), Task.TRANSCRIBE)
    fields = {k: v for k, v in form.fields.items() if k != "model"}
    # the file part's name and type are passed on only when they are plain (no control characters)
    filename = form.filename if form.filename and form.filename.isprintable() else "audio"
    ctype = form.file_type if form.file_type and _MEDIA_TYPE.match(form.file_type) else None
    audio = bytes(audio_buffer)

    def build(t: Target) -> tuple[str, bytes, dict[str, str]]:
        body, content_type = encode_multipart(
            {"model": t.upstream_model, **fields},
            ("file", filename or "audio", ctype or "application/octet-stream", audio),
        )
        return t.base_url + "/audio/transcriptions", body, {**openai_headers(t), "Content-Type": content_type}

    out = await _forward(ctx, req, model, len(audio) // 1000, build, "application/json")
    if out is not None:
        await req.respond(200, out[0], out[1].encode())


async def tts(ctx: Serving, req: Request) -> None:
    parsed = parse(SpeechRequest, await req.json_object(ctx.config.max_body_bytes))
    text, voice = parsed.input, parsed.voice
    model = _model(ctx, parsed.model, Task.SPEECH)

    def build(t: Target) -> tuple[str, bytes, dict[str, str]]:
        payload = {"model": t.upstream_model, "input": text, "voice": voice, "response_format": "mp3"}
        return t.base_url + "/audio/speech", orjson.dumps(payload), openai_headers(t)

    out = await _forward(ctx, req, model, len(text) // 4, build, "audio/mpeg")
    if out is not None:
        await req.respond(200, out[0], out[1].encode())

"""The request bodies of the gateway's JSON routes, as pydantic models: each route validates its body in one
step against its model (`Request.validated`), and a refusal is a 400 naming the field, never a 5xx. The same
models describe the API (their JSON schemas).

Models are strict (a number is not a string, a boolean is not a number) and refuse unknown fields where the
upstream would refuse them (chat); embeddings and the Anthropic route ignore fields they do not forward.
Checks that need the catalog or the store (the model's task, an upload's size cap, whether a key exists) stay
in the handlers, after this step."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentcloud.gateway.errors import GatewayError
from agentcloud.schema import PATTERNS

M = TypeVar("M", bound=BaseModel)
NonEmpty = Annotated[str, Field(min_length=1)]
Positive = Annotated[int, Field(ge=1)]
Events = Literal[
    "deployment.active",
    "deployment.degraded",
    "deployment.sla_breach",
    "deployment.recovered",
    "deployment.scaled",
    "deployment.inactive",
]


class Body(BaseModel):
    """A request body: strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ChatMessage(BaseModel):
    """One chat message: a role and its content (text or parts); other fields (tool calls, names) pass."""

    model_config = ConfigDict(extra="allow", strict=True)
    role: str
    content: str | list[Any] | None = None


class ChatRequest(Body):
    """OpenAI's chat completions, plus the sampling extras vLLM and llama.cpp accept."""

    model: NonEmpty | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: Positive | None = None
    max_completion_tokens: Positive | None = None
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    n: Annotated[int, Field(ge=1, le=16)] = 1
    stop: str | list[str] | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    logit_bias: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    user: Any = None
    seed: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    metadata: Any = None
    store: Any = None
    reasoning_effort: Any = None
    service_tier: Any = None
    modalities: Any = None
    prediction: Any = None
    top_k: Any = None
    chat_template_kwargs: Any = None


class MessagesRequest(BaseModel):
    """Anthropic's messages; the messages themselves are checked as they are translated."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: NonEmpty
    max_tokens: Positive
    messages: Annotated[list[Any], Field(min_length=1)]
    system: str | list[Any] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: Positive | None = None
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings (the gateway forwards encoding_format, dimensions and user)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: NonEmpty | None = None
    input: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1)]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Positive | None = None
    user: str | None = None


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    text: str


class RerankRequest(Body):
    model: NonEmpty | None = None
    query: NonEmpty
    documents: Annotated[list[str | RerankDocument], Field(min_length=1, max_length=1000)]
    top_n: Positive | None = None
    return_documents: bool | None = None


class SpeechRequest(Body):
    model: NonEmpty | None = None
    input: Annotated[str, Field(min_length=1, max_length=10_000)]
    voice: str = "en_female_1"
    response_format: Literal["mp3"] | None = None


class GrantRequest(Body):
    """POST .../permissions: a key of the deployment's org gets the inference role on it."""

    api_key_id: NonEmpty
    role: Literal["inference"] = "inference"


class WebhookRequest(Body):
    """POST .../webhooks: where to send which events (all of them by default)."""

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    events: Annotated[list[Events], Field(min_length=1)] = Field(
        default_factory=lambda: list(Events.__args__)  # type: ignore[attr-defined]
    )


class UploadRequest(Body):
    """POST /models/uploads: a resumable upload of a GGUF for a deployment."""

    name: NonEmpty
    deployment_id: NonEmpty
    size: Positive
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None


@dataclass(frozen=True)
class Media:
    """A request body that is not JSON: its media type and, for a form, its fields (name -> "string" or
    "binary") and which are required."""

    content_type: str
    fields: dict[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()


TRANSCRIPTION_FORM = Media(
    "multipart/form-data",
    {
        "file": "binary",
        "model": "string",
        "language": "string",
        "prompt": "string",
        "response_format": "string",
        "temperature": "string",
    },
    ("file",),
)
MODEL_UPLOAD_FORM = Media(  # the deployment comes before the file: it is authorized before the bytes
    "multipart/form-data",
    {"deployment_id": "string", "name": "string", "sha256": "string", "file": "binary"},
    ("deployment_id", "name", "file"),
)
UPLOAD_CHUNK = Media("application/offset+octet-stream")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error answer (OpenAI's shape)."""

    error: ErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorResponse(BaseModel):
    """Every error answer on /v1/messages (Anthropic's shape)."""

    type: Literal["error"]
    error: AnthropicErrorDetail


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\])$")


def _param(loc: tuple[int | str, ...]) -> str:
    """``('messages', 0, 'content', 'str')`` as ``messages[0].content`` (a union member's tag dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _UNION_TAG.match(part) or part[:1].isupper():  # a union member, or a model's name
            break
        else:
            out += f".{part}" if out else part
    return out or "body"


def _reason(error: Any) -> str:
    pattern = (error.get("ctx") or {}).get("pattern")
    if pattern is not None:  # say the form in words, not the regex
        return f"must be {PATTERNS.get(str(pattern), f'text matching {pattern}')}"
    return str(error["msg"]).removeprefix("Value error, ")


def refusal(exc: ValidationError, what: str = "request") -> GatewayError:
    """A 400 naming the first field at fault and what it must be (no library text or links)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    param = _param(first["loc"])
    if param == "body" and what != "request":  # a check of the whole object: name the object
        param = what
    if first["type"] == "extra_forbidden":
        return GatewayError(400, f"unsupported parameter: {param}", param=param, code="unsupported_parameter")
    if first["type"] == "missing":
        return GatewayError(400, f"{param}: required", param=param, code=f"invalid_{what}")
    same = [_reason(e) for e in errors if _param(e["loc"]) in (param, "body")]
    reasons = "; or ".join(dict.fromkeys(m[0].lower() + m[1:] for m in same))
    return GatewayError(400, f"{param}: {reasons}", param=param, code=f"invalid_{what}")


def parse(model: type[M], body: dict[str, Any], what: str = "request") -> M:
    """``body`` validated against ``model``; a refusal is a 400 (see `refusal`)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise refusal(exc, what) from None

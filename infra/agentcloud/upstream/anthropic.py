"""Anthropic Messages <-> OpenAI chat completions, for /v1/messages on OpenAI-compatible upstreams.

Pure functions plus one small state machine for streams. Covers: system prompts (string or blocks),
multi-turn, images, tool definitions, tool_choice, tool_use and tool_result blocks, stop sequences, stop
reasons, usage, and the full streaming event sequence (message_start, content_block_start/delta/stop,
message_delta, message_stop, error)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from agentcloud.upstream.errors import TranslationError


def bad_request(message: str, param: str | None = None) -> TranslationError:
    return TranslationError(message, param=param)


STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if (
                not isinstance(block, dict)
                or block.get("type") != "text"
                or not isinstance(block.get("text"), str)
            ):
                raise bad_request(f"{where}: only text blocks are allowed here", param=where)
            parts.append(block["text"])
        return "\n".join(parts)
    raise bad_request(f"{where}: must be a string or a list of text blocks", param=where)


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise bad_request("image source must be base64 or url", param="messages")
    return {"type": "image_url", "image_url": {"url": url}}


def _convert_message(i: int, msg: Any) -> list[dict[str, Any]]:
    if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
        raise bad_request(f"messages[{i}]: role must be 'user' or 'assistant'", param=f"messages[{i}].role")
    role, content = msg["role"], msg.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise bad_request(
            f"messages[{i}].content must be a string or a list of blocks", param=f"messages[{i}].content"
        )
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        where = f"messages[{i}].content[{j}]"
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image" and role == "user":
            parts.append(_image_part(block))
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise bad_request(f"{where}: tool_use needs string id and name", param=where)
            tool_calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": orjson.dumps(block.get("input", {})).decode(),
                    },
                }
            )
        elif kind == "tool_result" and role == "user":
            if not isinstance(block.get("tool_use_id"), str):
                raise bad_request(f"{where}: tool_result needs a string tool_use_id", param=where)
            result = block.get("content", "")
            text = _text_of(result, where) if not isinstance(result, str) else result
            if block.get("is_error"):
                text = f"[tool error] {text}"
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
        else:
            raise bad_request(f"{where}: unsupported content block {kind!r} for role {role}", param=where)
    if role == "assistant":
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        out.append(message)
    elif parts:
        simple = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "\n".join(p["text"] for p in parts) if simple else parts})
    return out


def to_openai(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat-completions request."""
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise bad_request("max_tokens: required, a positive integer", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages: required, a non-empty list", param="messages")
    out_messages: list[dict[str, Any]] = []
    if body.get("system") is not None:
        out_messages.append({"role": "system", "content": _text_of(body["system"], "system")})
    for i, msg in enumerate(messages):
        out_messages += _convert_message(i, msg)
    req: dict[str, Any] = {"model": upstream_model, "messages": out_messages, "max_tokens": max_tokens}
    for key in ("temperature", "top_p"):
        if key in body:
            if not isinstance(body[key], (int, float)) or isinstance(body[key], bool):
                raise bad_request(f"{key}: must be a number", param=key)
            req[key] = body[key]
    if "stop_sequences" in body:
        stops = body["stop_sequences"]
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise bad_request("stop_sequences: must be a list of strings", param="stop_sequences")
        req["stop"] = stops
    if body.get("tools"):
        tools = body["tools"]
        if not isinstance(tools, list):
            raise bad_request("tools: must be a list", param="tools")
        req["tools"] = []
        for k, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise bad_request(f"tools[{k}]: needs a name", param=f"tools[{k}]")
            req["tools"].append(
                {
                    "type": "function",
                    "function": {
                        "name": tool["name"],
                        "description": tool.get("description", ""),
                        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
                    },
                }
            )
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "auto":
            req["tool_choice"] = "auto"
        elif kind == "any":
            req["tool_choice"] = "required"
        elif kind == "none":
            req["tool_choice"] = "none"
        elif kind == "tool" and isinstance(choice.get("name"), str):
            req["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        else:
            raise bad_request(
                "tool_choice: type must be auto, any, tool (with name) or none", param="tool_choice"
            )
    if body.get("stream"):
        req["stream"] = True
        req["stream_options"] = {"include_usage": True}
    return req


def _stop_reason(finish: str | None, stop_sequences: list[str], text: str) -> tuple[str, str | None]:
    reason = STOP_REASONS.get(finish or "stop", "end_turn")
    if reason == "end_turn":
        for seq in stop_sequences:  # OpenAI reports "stop" for both; the matched sequence is not in the text
            if seq and text.endswith(seq):
                return "stop_sequence", seq
    return reason, None


def from_openai(resp: dict[str, Any], model: str, stop_sequences: list[str]) -> dict[str, Any]:
    """An OpenAI chat completion as an Anthropic Messages response."""
    choices = resp.get("choices") or [{}]
    choice = choices[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = msg.get("content") or ""
    if text:
        content.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            args = {"_raw": fn.get("arguments")}
        content.append(
            {"type": "tool_use", "id": call.get("id") or _tool_id(), "name": fn.get("name"), "input": args}
        )
    reason, seq = _stop_reason(choice.get("finish_reason"), stop_sequences, text)
    usage = resp.get("usage") or {}
    return {
        "id": f"msg_{resp.get('id') or secrets.token_hex(12)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": seq,
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        },
    }


def _tool_id() -> str:
    return f"toolu_{secrets.token_hex(12)}"


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@dataclass
class StreamTranslator:
    """Feed OpenAI stream chunks (parsed JSON); get Anthropic SSE bytes back."""

    model: str
    stop_sequences: list[str] = field(default_factory=list)
    message_id: str = field(default_factory=lambda: f"msg_{secrets.token_hex(12)}")
    started: bool = False
    block: int = -1
    block_kind: str | None = None
    tool_blocks: dict[int, int] = field(default_factory=dict)  # OpenAI tool-call index -> our block index
    text: str = ""
    finish: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0

    def start(self) -> bytes:
        self.started = True
        return sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": self.message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
                },
            },
        )

    def _close_block(self) -> bytes:
        if self.block_kind is None:
            return b""
        self.block_kind = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self.block})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self.block += 1
        self.block_kind = kind
        return out + sse(
            "content_block_start",
            {"type": "content_block_start", "index": self.block, "content_block": block},
        )

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self.started else self.start()
        usage = chunk.get("usage")
        if usage:
            self.input_tokens = usage.get("prompt_tokens", self.input_tokens)
            self.output_tokens = usage.get("completion_tokens", self.output_tokens)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self.block_kind != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                self.text += text
                out += sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self.block,
                        "delta": {"type": "text_delta", "text": text},
                    },
                )
            for call in delta.get("tool_calls") or []:
                idx = call.get("index", 0)
                fn = call.get("function") or {}
                if idx not in self.tool_blocks:
                    out += self._open(
                        "tool_use",
                        {
                            "type": "tool_use",
                            "id": call.get("id") or _tool_id(),
                            "name": fn.get("name") or "",
                            "input": {},
                        },
                    )
                    self.tool_blocks[idx] = self.block
                if fn.get("arguments"):
                    out += sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": self.tool_blocks[idx],
                            "delta": {"type": "input_json_delta", "partial_json": fn["arguments"]},
                        },
                    )
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def finish_stream(self) -> bytes:
        out = (b"" if self.started else self.start()) + self._close_block()
        reason, seq = _stop_reason(self.finish, self.stop_sequences, self.text)
        out += sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": seq},
                "usage": {"output_tokens": self.output_tokens},
            },
        )
        return out + sse("message_stop", {"type": "message_stop"})

    @staticmethod
    def error(message: str) -> bytes:
        return sse("error", {"type": "error", "error": {"type": "api_error", "message": message}})

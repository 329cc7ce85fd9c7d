"""The data plane's pure pieces without any server: Anthropic translation, SSE scanning, the circuit breaker,
the router and chat field parsing."""

from __future__ import annotations

import orjson
import pytest

from agentcloud.gateway.errors import GatewayError
from agentcloud.gateway.inference import chat_fields
from agentcloud.gateway.router import Router
from agentcloud.upstream import anthropic
from agentcloud.upstream.errors import TranslationError
from agentcloud.upstream.sse import UsageScanner, sse_events
from agentcloud.upstream.target import CircuitBreaker


# -- Anthropic <-> OpenAI ------------------------------------------------------------------------------------
def test_to_openai_maps_system_tools_choice_and_stream() -> None:
    body = {
        "model": "m",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "be brief"}],
        "stream": True,
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
        "stop_sequences": ["END"],
        "temperature": 0.2,
    }
    out = anthropic.to_openai(body, "upstream-m")
    assert out["model"] == "upstream-m" and out["max_tokens"] == 64 and out["stop"] == ["END"]
    assert out["messages"][0] == {"role": "system", "content": "be brief"}
    assert out["messages"][2]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert out["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "ok"}
    assert out["tool_choice"] == "required" and out["tools"][0]["function"]["name"] == "f"
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"max_tokens": 5, "messages": []}, "messages"),
        ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        (
            {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            "temperature",
        ),
        (
            {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "?"}},
            "tool_choice",
        ),
    ],
)
def test_to_openai_refuses_with_the_parameter(body: dict[str, object], param: str) -> None:
    with pytest.raises(TranslationError) as err:
        anthropic.to_openai(body, "m")
    assert err.value.status == 400 and err.value.param == param


def test_from_openai_stop_sequence_tools_and_usage() -> None:
    resp = {
        "id": "c1",
        "choices": [
            {
                "finish_reason": "stop",
                "message": {
                    "content": "done END",
                    "tool_calls": [{"id": "call_1", "function": {"name": "f", "arguments": '{"x": 2}'}}],
                },
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    }
    out = anthropic.from_openai(resp, "m", ["END"])
    assert out["stop_reason"] == "stop_sequence" and out["stop_sequence"] == "END"
    assert out["content"][1] == {"type": "tool_use", "id": "call_1", "name": "f", "input": {"x": 2}}
    assert out["usage"] == {"input_tokens": 7, "output_tokens": 3}


def _events(raw: bytes) -> list[str]:
    return [
        line.removeprefix(b"event: ").decode() for line in raw.split(b"\n") if line.startswith(b"event: ")
    ]


def test_stream_translator_emits_the_full_event_sequence() -> None:
    t = anthropic.StreamTranslator(model="m")
    out = t.feed({"choices": [{"delta": {"content": "he"}}]})
    out += t.feed({"choices": [{"delta": {"content": "llo"}, "finish_reason": "length"}]})
    out += t.feed({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}})
    out += t.finish_stream()
    assert _events(out) == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    delta = next(orjson.loads(line[6:]) for line in out.split(b"\n") if b'"message_delta"' in line)
    assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"] == {"output_tokens": 2}
    assert (t.input_tokens, t.output_tokens, t.text) == (4, 2, "hello")


# -- SSE -----------------------------------------------------------------------------------------------------
def test_usage_scanner_finds_usage_across_split_chunks() -> None:
    stream = (
        b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":5}}\n\ndata: [DONE]\n\n'
    )
    scanner = UsageScanner()
    for i in range(0, len(stream), 7):  # split anywhere, even inside the usage line
        scanner.feed(stream[i : i + 7])
    assert (scanner.prompt_tokens, scanner.completion_tokens, scanner.done) == (11, 5, True)
    truncated = UsageScanner()
    truncated.feed(stream[:60])
    assert not truncated.done and truncated.prompt_tokens == 0


def test_sse_events_keeps_partial_events() -> None:
    buffer = bytearray()
    assert sse_events(buffer, b"data: one\n\ndata: tw") == [b"one"]
    assert sse_events(buffer, b"o\n\n") == [b"two"] and buffer == bytearray()


# -- circuit breaker -----------------------------------------------------------------------------------------
def test_breaker_opens_probes_once_and_doubles_its_cooldown() -> None:
    now = [0.0]
    b = CircuitBreaker(threshold=2, cooldown_s=1.0, max_cooldown_s=3.0, clock=lambda: now[0])
    b.failure()
    assert b.allow() and b.state == "closed"
    b.failure()
    assert not b.allow() and b.state == "open"
    now[0] = 1.0
    assert b.state == "half-open" and b.allow() and not b.allow()  # one probe only
    b.failure()  # the probe failed: cooldown doubles
    now[0] = 2.5
    assert not b.allow()
    now[0] = 3.0
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow() and b.cooldown_s == 1.0


# -- router and chat fields ----------------------------------------------------------------------------------
async def _noop(req: object) -> None:
    return None


def test_router_matches_static_and_parameterised_paths() -> None:
    router = Router()
    router.add("GET", "/a", _noop, auth=False)
    router.add("POST", "/d/{deployment_id}/chat", _noop, metered=True)
    route, params = router.match("POST", "/d/dep_1/chat")
    assert params == {"deployment_id": "dep_1"} and route.metered and route.auth
    assert router.match("GET", "/a")[0].auth is False
    for method, path, status in (
        ("POST", "/a", 405),
        ("GET", "/d/dep_1/chat", 405),
        ("GET", "/b", 404),
        ("POST", "/d/a b/chat", 404),
        ("POST", "/d/" + "x" * 129 + "/chat", 404),
    ):
        with pytest.raises(GatewayError) as err:
            router.match(method, path)
        assert err.value.status == status, (method, path)


def test_chat_fields() -> None:
    msgs = [{"role": "user", "content": "x"}]
    assert chat_fields({"model": "m", "messages": msgs}, 512) == ("m", False, 512)
    assert chat_fields({"messages": msgs, "stream": True, "max_tokens": 9}, 512) == (None, True, 9)
    assert chat_fields({"messages": msgs, "n": 2}, 512) == (None, False, 512)  # passed on to the engine
    for body, param in (
        ({"messages": msgs, "bogus": 1}, "bogus"),
        ({"messages": []}, "messages"),
        ({"messages": msgs, "stream": "yes"}, "stream"),
        ({"messages": msgs, "max_tokens": 0}, "max_tokens"),
        ({"messages": msgs, "n": 0}, "n"),
        ({"messages": msgs, "n": 17}, "n"),
        ({"messages": msgs, "temperature": "hot"}, "temperature"),
        ({"messages": msgs, "tools": "x"}, "tools"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"content": "x"}]}, "messages[0].role"),
    ):
        with pytest.raises(GatewayError) as err:
            chat_fields(body, 512)
        assert err.value.status == 400 and err.value.param == param


def test_usage_filter_drops_usage_only_events_and_keeps_the_rest() -> None:
    from agentcloud.upstream.sse import UsageFilter

    stream = (
        b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
        b'data: {"choices":[{"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":3}}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\ndata: [DONE]\n\n'
    )
    f = UsageFilter()
    out = b"".join(f.feed(stream[i : i + 9]) for i in range(0, len(stream), 9)) + f.flush()
    assert b'"usage"' not in out and out.count(b"data:") == 3 and out.endswith(b"data: [DONE]\n\n")
    assert b'"finish_reason":"stop"' in out


def test_a_refusal_names_the_field_without_library_text() -> None:
    from agentcloud.gateway.schemas import ChatRequest, WebhookRequest, parse

    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(GatewayError) as err:
        parse(ChatRequest, {"messages": [{"role": "user", "content": 5}]})
    assert err.value.param == "messages[0].content"
    assert err.value.message == (
        "messages[0].content: input should be a valid string; or input should be a valid list"
    )
    with pytest.raises(GatewayError) as err:
        parse(ChatRequest, {"messages": msgs, "temperature": True})
    assert (
        err.value.message == "temperature: input should be a valid number"
        and "pydantic" not in err.value.message
    )
    with pytest.raises(GatewayError) as err:
        parse(WebhookRequest, {"url": "https://x.example/", "events": [[1]]}, "webhook")
    assert err.value.param == "events[0]" and err.value.code == "invalid_webhook"
    assert parse(WebhookRequest, {"url": "https://x.example/"}).events[0] == "deployment.active"


def test_a_meter_integrates_the_rate_of_the_replicas_running() -> None:
    from agentcloud.records import MAX_RATE_CHANGES, Meter

    m = Meter().at(0.0, 4.0).at(3600.0, 8.0).at(7200.0, 0.0)  # 1 h at $4/h, 1 h at $8/h, then zero
    assert m.at(7300.0, 0.0) is m, "an unchanged rate records nothing"
    assert m.cost(0.0, 10_000.0) == pytest.approx(12.0)
    assert m.cost(1800.0, 5400.0) == pytest.approx(2.0 + 4.0)
    assert m.cost(7200.0, 10_000.0) == 0.0 and m.rate == 0.0
    long = Meter()
    for i in range(MAX_RATE_CHANGES + 10):  # $1/h and $0/h in turn, an hour each
        long = long.at(i * 3600.0, float(i % 2 == 0))
    assert len(long.changes) == MAX_RATE_CHANGES
    assert long.cost(0.0, (MAX_RATE_CHANGES + 10) * 3600.0) == pytest.approx((MAX_RATE_CHANGES + 10) / 2)
    assert Meter.from_dict(long.as_dict()) == long

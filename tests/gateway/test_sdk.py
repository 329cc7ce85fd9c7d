"""The official openai and anthropic SDKs against the gateway on 127.0.0.1, upstream a fake OpenAI server."""

from __future__ import annotations

import json
from typing import Any, cast

import anthropic
import openai
import pytest

from tests.gateway.fake_upstream import FakeUpstream
from tests.gateway.harness import CHAT_MODEL, Keys, Running, wait_for


def test_chat_non_streaming(gw: Running, keys: Keys, upstream: FakeUpstream) -> None:
    client = gw.openai(keys.standard)
    resp = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "hello there"}]
    )
    assert resp.choices[0].message.content == "echo: hello there"
    assert resp.usage is not None and resp.usage.prompt_tokens == 7 and resp.usage.completion_tokens == 3
    assert (
        upstream.stats.headers[-1]["Authorization"] == "Bearer upstream-secret"
    )  # the provider's key, not the caller's


def test_chat_streaming_with_usage(gw: Running, keys: Keys, upstream: FakeUpstream) -> None:
    client = gw.openai(keys.standard)
    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "one two three"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert all(c.usage is None for c in chunks)  # the client did not ask: usage is metered, not sent
    assert upstream.stats.bodies[-1]["stream_options"] == {"include_usage": True}
    asked = list(
        client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 4
    assert wait_for(lambda: upstream.stats.completed_streams == 2)
    assert wait_for(lambda: gw.gateway.metrics.models[CHAT_MODEL].completion_tokens == 8)


def test_tool_calls(gw: Running, keys: Keys) -> None:
    client = gw.openai(keys.standard)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    resp = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "[[tool]]"}], tools=tools
    )
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert resp.choices[0].finish_reason == "tool_calls"


def test_deployment_route_via_sdk(gw: Running, keys: Keys) -> None:
    client = openai.OpenAI(
        base_url=f"{gw.url}/api/v1/public/deployments/dep_a", api_key=keys.standard, max_retries=0
    )
    resp = client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "echo: hi"
    assert wait_for(lambda: gw.gateway.metrics.deployments["dep_a"].requests == 1)


def test_anthropic_messages(gw: Running, keys: Keys, upstream: FakeUpstream) -> None:
    client = gw.anthropic(keys.standard)
    msg = client.messages.create(
        model=CHAT_MODEL,
        max_tokens=64,
        system="You are terse.",
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second turn"}]},
        ],
    )
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: second turn"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == 7 and msg.usage.output_tokens == 3
    sent = upstream.stats.bodies[-1]
    assert sent["messages"][0] == {"role": "system", "content": "You are terse."}
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]


def test_anthropic_tool_use_and_result(gw: Running, keys: Keys, upstream: FakeUpstream) -> None:
    client = gw.anthropic(keys.standard)
    tools = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object"}}]
    msg = client.messages.create(
        model=CHAT_MODEL,
        max_tokens=64,
        tools=tools,
        messages=[{"role": "user", "content": "[[tool]] weather?"}],
    )
    (block,) = msg.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == {"city": "Paris"}
    assert msg.stop_reason == "tool_use"
    follow = client.messages.create(
        model=CHAT_MODEL,
        max_tokens=64,
        tools=tools,
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": block.id, "name": "get_weather", "input": {"city": "Paris"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}],
            },
        ],
    )
    sent = upstream.stats.bodies[-1]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": block.id, "content": "sunny"}
    assert follow.content[0].text == "echo: sunny"


def test_anthropic_stream_event_sequence(gw: Running, keys: Keys) -> None:
    client = gw.anthropic(keys.standard)
    with client.messages.stream(
        model=CHAT_MODEL, max_tokens=64, messages=[{"role": "user", "content": "a b"}]
    ) as s:
        events = [e.type for e in s]
        final = s.get_final_message()
    core = [
        e
        for e in events
        if e
        in {
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        }
    ]
    assert core[0] == "message_start" and core[1] == "content_block_start"
    assert core[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(core[2:-3]) == {"content_block_delta"}
    assert final.content[0].text == "echo: a b" and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3


def test_anthropic_stream_tool_use(gw: Running, keys: Keys) -> None:
    client = gw.anthropic(keys.standard)
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    with client.messages.stream(
        model=CHAT_MODEL, max_tokens=64, tools=tools, messages=[{"role": "user", "content": "[[tool]]"}]
    ) as s:
        final = s.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_anthropic_errors_are_anthropic_shaped(gw: Running, keys: Keys) -> None:
    client = gw.anthropic(keys.standard)
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=CHAT_MODEL, max_tokens=0, messages=[{"role": "user", "content": "x"}])
    body = cast(dict[str, Any], err.value.body)
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.AuthenticationError):
        gw.anthropic("ak_live_wrong").messages.create(
            model=CHAT_MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


def test_embeddings_rerank_audio(gw: Running, keys: Keys) -> None:
    import requests

    client = gw.openai(keys.basic)
    emb = client.embeddings.create(model="bge-m3", input=["a", "bbb"])
    assert len(emb.data) == 2 and emb.data[1].embedding[0] == 3.0
    h = {"Authorization": f"Bearer {keys.basic}"}
    r = requests.post(
        f"{gw.url}/api/v1/public/embeddings/generate", headers=h, json={"input": "The quick brown fox"}
    )
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 3
    r = requests.post(
        f"{gw.url}/api/v1/public/rerank",
        headers=h,
        json={
            "query": "quantum computing",
            "top_n": 2,
            "documents": ["Quantum computers use qubits.", "Classical bits.", "quantum computing is here"],
        },
    )
    results = r.json()["results"]
    assert (
        r.status_code == 200
        and [x["index"] for x in results] == [2, 0]
        and results[0]["document"].startswith("quantum")
    )
    r = requests.post(
        f"{gw.url}/api/v1/public/audio/transcriptions",
        headers=h,
        files={"file": ("a.mp3", b"\x00" * 1234, "audio/mpeg")},
        data={"model": "whisper-large-v3-turbo"},
    )
    assert r.status_code == 200 and r.json()["text"] == "heard 1234 bytes with whisper-large-v3-turbo"
    r = requests.post(
        f"{gw.url}/api/v1/public/audio/tts",
        headers={"Authorization": f"Bearer {keys.admin}"},
        json={"input": "Hello", "model": "minimax-speech-02-hd", "voice": "en_female_1"},
    )
    assert (
        r.status_code == 200
        and r.headers["content-type"] == "audio/x-fake-mpeg"
        and r.content.startswith(b"ID3Hello")
    )


def test_models_by_plan(gw: Running, keys: Keys) -> None:
    import requests

    def ids(key: str, path: str) -> set[str]:
        r = requests.get(f"{gw.url}/api/v1/public/{path}", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        return {m["id"] for m in r.json()["data"]}

    everything = ids(keys.standard, "models")
    free = ids(keys.standard, "models/available")
    basic = ids(keys.basic, "models/available")
    assert "claude-opus-4-1" in everything and "claude-opus-4-1" not in basic
    assert "llama-3.3-70b-instruct" in free and "bge-m3" not in free and "bge-m3" in basic
    assert ids(keys.scoped, "models/available") == set()
    assert {m.id for m in gw.openai(keys.standard).models.list()} == free

"""Streamed tokens are always metered: whatever the client asks of stream_options, and when it leaves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from tests.gateway.fake_upstream import FakeUpstream
from tests.gateway.harness import CHAT_MODEL, Keys, Running, wait_for


def test_a_client_that_declines_usage_is_metered_all_the_same(
    gw: Running, keys: Keys, upstream: FakeUpstream
) -> None:
    client = gw.openai(keys.standard)
    chunks = list(
        client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            stream_options={"include_usage": False},
        )
    )
    assert all(c.usage is None for c in chunks)  # as the client asked
    assert upstream.stats.bodies[-1]["stream_options"] == {"include_usage": True}  # the gateway asked anyway
    series = gw.gateway.metrics.models[CHAT_MODEL]
    assert wait_for(lambda: (series.prompt_tokens, series.completion_tokens) == (7, 4))


def test_a_client_that_leaves_mid_stream_is_metered_for_what_it_got(
    gw: Running, keys: Keys, upstream: FakeUpstream
) -> None:
    body: dict[str, Any] = {
        "model": CHAT_MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "[[chunks=40]] [[gap=0.05]] a long answer"}],
    }
    headers = {"Authorization": f"Bearer {keys.standard}"}
    got = 0
    with requests.post(
        f"{gw.url}/v1/chat/completions", json=body, headers=headers, stream=True, timeout=15
    ) as r:
        for line in r.iter_lines():
            got += b'"content"' in line
            if got >= 10:
                break  # the client leaves before the usage event
    series = gw.gateway.metrics.models[CHAT_MODEL]
    assert wait_for(lambda: series.requests == 1, 5)
    assert series.completion_tokens >= 9 and series.prompt_tokens > 0, (
        series.prompt_tokens,
        series.completion_tokens,
    )


def test_an_unknown_plan_is_refused_when_the_key_is_made_and_when_it_is_used(
    gw: Running, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentcloud.cli import main
    from agentcloud.store import Store
    from tests.gateway.harness import PEPPER

    db = str(tmp_path / "gw.sqlite3")
    Store(db).create_org("acme", org_id="org_acme")
    assert main(["gateway", "--database", db, "keys", "create", "--org", "org_acme", "--plan", "pro"]) == 2
    assert "--plan pro: no such plan in the catalog" in capsys.readouterr().err
    # a key made before (or by hand) with a plan the catalog lacks gets no limits-free pass
    _, token = gw.gateway.store.create_key(PEPPER, "org_a", "old", "pro")
    answer = gw.openai(token).with_raw_response
    import openai

    with pytest.raises(openai.PermissionDeniedError, match="plan 'pro' is not in the catalog"):
        answer.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}])


def test_requests_that_cannot_be_served_as_asked_are_400s(gw: Running, keys: Keys) -> None:
    headers = {"Authorization": f"Bearer {keys.standard}"}
    msgs = [{"role": "user", "content": "hi"}]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/v1/chat/completions", {"model": "bge-m3", "messages": msgs}),  # an embedding model: was a 502
        ("/v1/chat/completions", {"model": CHAT_MODEL, "messages": [{"role": "user", "content": 5}]}),
        ("/v1/chat/completions", {"model": CHAT_MODEL, "messages": msgs, "temperature": "hot"}),
        ("/v1/chat/completions", {"model": CHAT_MODEL, "messages": msgs, "tools": "x"}),
        (
            "/api/v1/public/deployments/dep_a/chat/completions",
            {"model": "some-other-model", "messages": msgs},
        ),
    ]
    for path, body in cases:
        answer = requests.post(f"{gw.url}{path}", json=body, headers=headers, timeout=10)
        assert answer.status_code == 400, (body, answer.text)
    ok = requests.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": msgs, "n": 2},
        headers=headers,
        timeout=10,
    )
    assert ok.status_code == 200, ok.text  # n > 1 is passed on


def test_a_client_that_goes_away_is_not_an_error(gw: Running, keys: Keys) -> None:
    body: dict[str, Any] = {
        "model": CHAT_MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "[[chunks=40]] [[gap=0.05]] long"}],
    }
    headers = {"Authorization": f"Bearer {keys.standard}"}
    with requests.post(
        f"{gw.url}/v1/chat/completions", json=body, headers=headers, stream=True, timeout=15
    ) as r:
        next(r.iter_lines())
    series = gw.gateway.metrics.models[CHAT_MODEL]
    assert wait_for(lambda: series.requests == 1, 5) and series.errors == 0


def test_a_model_without_its_provider_key_is_neither_listed_nor_routed(
    catalog: Any, store: Any, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentcloud.gateway.routing import from_catalog
    from tests.gateway.harness import make_gateway, running

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    routes = from_catalog(catalog)
    assert "claude-opus-4-1" not in routes.models and routes.unconfigured["claude-opus-4-1"] == [
        "ANTHROPIC_API_KEY"
    ]
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert [t.api_key for t in from_catalog(catalog).models["claude-opus-4-1"]] == ["sk-test"]
    with running(make_gateway(catalog, store, routes)) as r:
        headers = {"Authorization": f"Bearer {keys.admin}"}
        body: dict[str, Any] = {
            "model": "claude-opus-4-1",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}],
        }
        answer = requests.post(f"{r.url}/v1/messages", json=body, headers=headers, timeout=10)
        assert answer.status_code == 404 and "set ANTHROPIC_API_KEY" in answer.text, answer.text
        listed = requests.get(f"{r.url}/api/v1/public/models/available", headers=headers, timeout=10).json()
        assert "claude-opus-4-1" not in {m["id"] for m in listed["data"]}

"""Fuzzing every POST route with malformed bodies (hypothesis): always a 4xx with an error body, never a 500,
never a hang; and the oversize-body cap."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.catalog import Catalog
from infra.store import Store
from tests.gateway.fake_upstream import fake_upstream
from tests.gateway.harness import CHAT_MODEL, Keys, Running, make_gateway, routes_for, running, seed

API = "/api/v1/public"
POST_ROUTES = [
    "/v1/chat/completions",
    f"{API}/deployments/dep_a/chat/completions",
    f"{API}/orgs/org_a/deployments/dep_a/chat/completions",
    "/v1/messages",
    f"{API}/embeddings/generate",
    f"{API}/rerank",
    f"{API}/audio/tts",
    f"{API}/deployments/dep_a/permissions",
    f"{API}/audio/transcriptions",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "model",
        "messages",
        "stream",
        "max_tokens",
        "input",
        "query",
        "documents",
        "top_n",
        "system",
        "tools",
        "tool_choice",
        "role",
        "content",
        "api_key_id",
        "n",
        "voice",
    ]
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(field_names, json_values, max_size=6).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries(
        {
            "model": st.just(CHAT_MODEL),
            "messages": st.lists(
                st.dictionaries(st.sampled_from(["role", "content", "tool_calls"]), json_values, max_size=3),
                max_size=3,
            ),
            "max_tokens": json_values,
        }
    ).map(lambda d: json.dumps(d).encode()),
)


@pytest.fixture(scope="module")
def fuzz_gateway(catalog: Catalog) -> Iterator[tuple[Running, Keys]]:
    store = Store(":memory:")
    keys = seed(store, requests_per_minute=1_000_000)
    with fake_upstream() as up, running(make_gateway(catalog, store, routes_for(up.base_url))) as r:
        yield r, keys
    store.close()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(POST_ROUTES),
    body=bodies,
    content_type=st.sampled_from(["application/json", "text/plain", "multipart/form-data; boundary=xyz", ""]),
)
def test_malformed_bodies_never_500(
    fuzz_gateway: tuple[Running, Keys], route: str, body: bytes, content_type: str
) -> None:
    r, keys = fuzz_gateway
    headers = {"Authorization": f"Bearer {keys.admin}", "Content-Type": content_type}
    resp = requests.post(r.url + route, data=body, headers=headers, timeout=10)
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    if resp.status_code >= 400:
        payload = resp.json()
        assert ("error" in payload) and (payload.get("type") == "error" or "message" in payload["error"])


def test_oversize_body_is_413(fuzz_gateway: tuple[Running, Keys]) -> None:
    r, keys = fuzz_gateway
    huge = b'{"model": "x", "messages": [' + b" " * (5 * 1024 * 1024) + b"]}"
    resp = requests.post(
        f"{r.url}/v1/chat/completions",
        data=huge,
        timeout=30,
        headers={"Authorization": f"Bearer {keys.admin}", "Content-Type": "application/json"},
    )
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"


def test_unknown_model_unknown_route_wrong_method(fuzz_gateway: tuple[Running, Keys]) -> None:
    r, keys = fuzz_gateway
    h = {"Authorization": f"Bearer {keys.admin}"}
    resp = requests.post(
        f"{r.url}/v1/chat/completions",
        json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]},
        headers=h,
    )
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
    assert requests.get(f"{r.url}/v1/nothing", headers=h).status_code == 404
    assert requests.get(f"{r.url}/v1/chat/completions", headers=h).status_code == 405
    bad = requests.post(
        f"{r.url}/v1/chat/completions",
        headers=h,
        json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "x"}], "best_of": 3},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "best_of"

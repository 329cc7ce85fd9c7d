"""Fuzzing every route that takes a body with malformed bodies (hypothesis): always a 4xx with an error body,
never a 500, never a hang; the nesting bound and the oversize-body cap."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator

import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentcloud.catalog import Catalog
from tests.gateway.harness import CHAT_MODEL, World, world_of

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
def world(catalog: Catalog, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world_of(catalog, tmp_path_factory.mktemp("fuzz")) as w:
        yield w


def _paths(w: World) -> list[tuple[str, str]]:
    """(method, path) of every route that takes a body, with each path parameter filled by one of: an object
    of org_a, of org_b, or one that does not exist."""
    ids = {
        "deployment_id": ["dep_a", "dep_b", w.dep_m, "dep_u", "dep_nope"],
        "org_id": ["org_a", "org_b", "org_nope"],
        "upload_id": [w.upload(), "upl_nope"],
        "api_key_id": [w.keys.ids["expired"], "key_nope"],
    }
    out = []
    for method, template, _ in w.r.gateway.router.templates:
        if method not in ("POST", "PATCH", "PUT"):
            continue
        names = re.findall(r"\{(\w+)\}", template)
        for values in itertools.product(*(ids[n] for n in names)):
            path = template
            for name, value in zip(names, values, strict=True):
                path = path.replace(f"{{{name}}}", value)
            out.append((method, path))
    return out


def _deep(levels: int) -> bytes:
    return b'{"model": "x", "messages": ' + b'[{"a":' * levels + b"1" + b"}]" * levels + b"}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    body=bodies | st.integers(60, 1200).map(_deep),
    content_type=st.sampled_from(
        [
            "application/json",
            "text/plain",
            "multipart/form-data; boundary=xyz",
            "application/offset+octet-stream",
            "",
        ]
    )
    | (
        st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80)
        | st.integers(60, 400).map(lambda n: "b" * n)  # around the limits of RFC 2046 and of the parser
    ).map(lambda b: f"multipart/form-data; boundary={b}"),
    key=st.sampled_from(["admin", "admin_b", "standard", "scoped", "member"]),
)
def test_malformed_bodies_never_500(
    world: World, data: st.DataObject, body: bytes, content_type: str, key: str
) -> None:
    """Every route that takes a body (management API included), any key: a 4xx with an error body or a
    success, never a 5xx, never a hang."""
    method, path = data.draw(st.sampled_from(_paths(world)))
    if content_type.startswith("multipart/form-data; boundary=") and data.draw(st.booleans()):
        boundary = content_type.split("=", 1)[1].encode()  # a body that uses it, so the parser runs
        body = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"\r\n\r\n' + body
        body += b"\r\n--" + boundary + b"--\r\n"
    headers = {"Content-Type": content_type, "Upload-Offset": "0"}
    resp = world.call(method, path, world.tokens[key], data=body, headers=headers)
    assert resp.status_code < 500, (method, path, resp.status_code, resp.text[:300])
    if resp.status_code >= 400:
        payload = resp.json()
        assert ("error" in payload) and (payload.get("type") == "error" or "message" in payload["error"])


def test_nesting_is_bounded(world: World) -> None:
    for levels, status in ((30, 200), (31, 400)):  # 4 levels around, then 2 per level: 64, 66
        body = {
            "model": CHAT_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        }
        raw = orjson.dumps(body).replace(
            b'"parameters":{}', b'"parameters":' + b'{"a":[' * levels + b"1" + b"]}" * levels
        )
        resp = world.call(
            "POST",
            "/v1/chat/completions",
            world.keys.admin,
            data=raw,
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == status, resp.text
        if status == 400:
            assert resp.json()["error"]["code"] == "too_deep"


def test_oversize_body_is_413(world: World) -> None:
    r, keys = world.r, world.keys
    huge = b'{"model": "x", "messages": [' + b" " * (5 * 1024 * 1024) + b"]}"
    resp = requests.post(
        f"{r.url}/v1/chat/completions",
        data=huge,
        timeout=30,
        headers={"Authorization": f"Bearer {keys.admin}", "Content-Type": "application/json"},
    )
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"


def test_unknown_model_unknown_route_wrong_method(world: World) -> None:
    r, keys = world.r, world.keys
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


@pytest.mark.parametrize("length", [1, 70, 71, 256, 257, 300])
@pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/api/v1/public/models/upload"])
def test_multipart_boundaries_of_any_length_get_an_answer(world: World, path: str, length: int) -> None:
    boundary = "b" * length
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="deployment_id"\r\n\r\ndep_u\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\nxx\r\n'
        f"--{boundary}--\r\n"
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    resp = world.call("POST", path, world.keys.admin, data=body.encode(), headers=headers)
    assert resp.status_code < 500, resp.text
    refused = resp.status_code == 400 and resp.json()["error"]["code"] == "bad_boundary"
    assert refused == (length > 70), resp.text

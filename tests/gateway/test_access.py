"""Authorization as a matrix: every kind of key x every route answers exactly as designed (docs/gateway.md).

Design: missing/malformed/unknown/revoked/expired key -> 401; a deployment in another org the key has no
membership in -> 404, exactly like one that does not exist; same org or a member but without the permission
-> 403; a model above the key's plan -> 403.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from infra.catalog import Catalog
from infra.store import Store
from infra.store import keys as keymod
from tests.gateway.fake_upstream import fake_upstream
from tests.gateway.harness import CHAT_MODEL, Keys, Running, make_gateway, routes_for, running, seed

API = "/api/v1/public"
CHAT = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}
ROUTES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "public-free": ("POST", f"{API}/chat/completions", CHAT),
    "public-basic": ("POST", f"{API}/chat/completions", {**CHAT, "model": "gemma-3-27b-it"}),
    "dep_a": ("POST", f"{API}/deployments/dep_a/chat/completions", CHAT),
    "dep_b": ("POST", f"{API}/deployments/dep_b/chat/completions", CHAT),
    "dep_missing": ("POST", f"{API}/deployments/dep_nope/chat/completions", CHAT),
    "org_a/dep_a": ("POST", f"{API}/orgs/org_a/deployments/dep_a/chat/completions", CHAT),
    "org_b/dep_b": ("POST", f"{API}/orgs/org_b/deployments/dep_b/chat/completions", CHAT),
    "org_a/dep_b": ("POST", f"{API}/orgs/org_a/deployments/dep_b/chat/completions", CHAT),
    "grant dep_a": ("POST", f"{API}/deployments/dep_a/permissions", None),
    "metrics dep_a": ("GET", f"{API}/deployments/dep_a/metrics", None),
}
KEYS = ["admin", "standard", "basic", "scoped", "scoped_other", "other_org", "member", "member_read_only"]
BAD_KEYS = ["revoked", "expired", "malformed", "unknown", "missing"]
# Expected status per route, for the keys in KEYS order.
EXPECTED = {
    "public-free": [200, 200, 200, 403, 403, 200, 200, 200],
    "public-basic": [200, 403, 200, 403, 403, 200, 403, 403],
    "dep_a": [200, 200, 200, 200, 403, 404, 200, 403],
    "dep_b": [404, 404, 404, 404, 404, 200, 200, 200],
    "dep_missing": [404, 404, 404, 404, 404, 404, 404, 404],
    "org_a/dep_a": [200, 200, 200, 200, 403, 404, 200, 403],
    "org_b/dep_b": [404, 404, 404, 404, 404, 200, 200, 200],
    "org_a/dep_b": [404, 404, 404, 404, 404, 404, 404, 404],
    "grant dep_a": [201, 403, 403, 403, 403, 404, 403, 403],
    "metrics dep_a": [200, 200, 200, 200, 403, 404, 200, 200],
}


@pytest.fixture(scope="module")
def matrix_gateway(catalog: Catalog) -> Iterator[tuple[Running, Keys]]:
    store = Store(":memory:")
    keys = seed(store, requests_per_minute=10_000)  # this file is about access, not limits
    with fake_upstream() as up, running(make_gateway(catalog, store, routes_for(up.base_url))) as r:
        yield r, keys
    store.close()


def _call(r: Running, route: str, token: str | None, keys: Keys) -> int:
    method, path, body = ROUTES[route]
    if route == "grant dep_a":  # a key used nowhere else in the matrix, so the grant changes no other answer
        body = {"api_key_id": keys.ids["expired"], "role": "inference"}
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    resp = requests.request(method, r.url + path, json=body, headers=headers, timeout=10)
    body_json = resp.json()
    assert "error" in body_json or resp.status_code < 300, body_json
    return resp.status_code


def test_matrix(matrix_gateway: tuple[Running, Keys]) -> None:
    r, keys = matrix_gateway
    wrong: list[str] = []
    for route, expected in EXPECTED.items():
        for name, want in zip(KEYS, expected, strict=True):
            got = _call(r, route, getattr(keys, name), keys)
            if got != want:
                wrong.append(f"{name} on {route}: {got}, designed {want}")
    assert not wrong, "\n".join(wrong)


def test_bad_keys_get_401_everywhere(matrix_gateway: tuple[Running, Keys]) -> None:
    r, keys = matrix_gateway
    tokens = {
        "revoked": keys.revoked,
        "expired": keys.expired,
        "malformed": "ak_live_short",
        "unknown": keymod.generate(),
        "missing": None,
    }
    for route in ROUTES:
        for name in BAD_KEYS:
            assert _call(r, route, tokens[name], keys) == 401, f"{name} on {route}"


def test_grant_then_revoke_takes_effect(matrix_gateway: tuple[Running, Keys]) -> None:
    r, keys = matrix_gateway
    admin = {"Authorization": f"Bearer {keys.admin}"}
    url = f"{r.url}{API}/deployments/dep_a"
    assert (
        requests.post(
            f"{url}/permissions", json={"api_key_id": keys.ids["scoped_other"]}, headers=admin
        ).status_code
        == 201
    )
    assert _call(r, "dep_a", keys.scoped_other, keys) == 200
    assert requests.delete(f"{url}/permissions/{keys.ids['scoped_other']}", headers=admin).status_code == 200
    assert _call(r, "dep_a", keys.scoped_other, keys) == 403
    assert requests.delete(f"{url}/permissions/{keys.ids['scoped_other']}", headers=admin).status_code == 404
    bad = requests.post(f"{url}/permissions", json={"api_key_id": "key_nope"}, headers=admin)
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "api_key_not_found"
    assert requests.post(f"{url}/permissions", json={"api_key_id": 5}, headers=admin).status_code == 400


def test_keys_are_stored_only_as_hashes(store: Store, keys: Keys) -> None:
    rows = store._exec("SELECT prefix, hash FROM api_keys")
    dump = repr(rows)
    for token in (keys.admin, keys.standard, keys.scoped):
        assert token not in dump and token[:14] in dump  # only the display prefix is kept
    assert all(len(h) == 64 for _, h in rows)

"""Authorization as a matrix: every kind of key x every route answers exactly as designed (docs/gateway.md).

Design: missing/malformed/unknown/revoked/expired key -> 401; a deployment in another org the key has no
membership in -> 404, exactly like one that does not exist; same org or a member but without the permission
-> 403; a model above the key's plan -> 403.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from agentcloud.catalog import Catalog
from agentcloud.control.uploads import OFFSET_CT
from agentcloud.store import Store
from agentcloud.store import keys as keymod
from tests.gateway.harness import (
    CHAT_MODEL,
    Keys,
    World,
    world_of,
)
from tests.gateway.stand_in_ops import SPEC

API = "/api/v1/public"
CHAT = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}
KEYS = [
    "admin",
    "standard",
    "basic",
    "scoped",
    "scoped_other",
    "other_org",
    "member",
    "member_read_only",
    "admin_b",
]
BAD_KEYS = ["revoked", "expired", "malformed", "unknown", "missing"]
# /metrics has its own token (test_tenancy); the contract and its page are public (test_contract)
UNAUTHENTICATED = {("GET", p) for p in ("/health", "/metrics", "/openapi.json", "/docs", "/")} | {
    ("GET", p)
    for p in ("/console", "/console/console.js", "/console/console.css")  # static files
}


@dataclass(frozen=True)
class Row:
    """One route of the router, called by every key: ``path`` and ``kw`` (request arguments) may be built per
    call; ``expected`` holds the designed status for each key of KEYS, in order."""

    method: str
    template: str
    expected: tuple[int, ...]
    path: Callable[[World], str] | str | None = None
    kw: Callable[[World], dict[str, Any]] | None = None


def _spec(w: World) -> dict[str, Any]:
    return {"json": {**SPEC, "name": f"matrix-{next(w.names)}"}}


def _git_stack(w: World) -> dict[str, Any]:
    name = f"git-{next(w.names)}"
    text = yaml.safe_dump({"config": {"agent-cloud:deployment": {**SPEC, "name": name}}})
    return {"json": {"stack": name, "stack_file": text}}


def _grant(w: World) -> dict[str, Any]:
    return {"json": {"api_key_id": w.keys.ids["expired"], "role": "inference"}}


def _granted(w: World) -> str:
    w.admin("POST", f"{API}/deployments/{w.dep_m}/permissions", json=_grant(w)["json"])
    return f"{API}/deployments/{w.dep_m}/permissions/{w.keys.ids['expired']}"


def _dep_m(suffix: str = "") -> Callable[[World], str]:
    return lambda w: f"{API}/deployments/{w.dep_m}{suffix}"


def _audio(w: World) -> dict[str, Any]:
    return {
        "files": {"file": ("a.mp3", b"\x00" * 64, "audio/mpeg")},
        "data": {"model": "whisper-large-v3-turbo"},
    }


def _bytes(w: World) -> dict[str, Any]:
    return {"data": b"\x00" * 16, "headers": {"Content-Type": OFFSET_CT, "Upload-Offset": "0"}}


def _not_gguf(w: World) -> dict[str, Any]:
    return {
        "data": {"deployment_id": "dep_u", "name": f"mp{next(w.names)}"},
        "files": {"file": ("x.gguf", b"nope")},
    }


CHAT_ALL = (200, 200, 200, 403, 403, 200, 200, 200, 200)  # scoped keys call only their grants
BASIC_TIER = (200, 403, 200, 403, 403, 200, 403, 403, 200)  # and free-plan keys no basic-tier model
PRO_TIER = (200, 403, 403, 403, 403, 200, 403, 403, 200)
READ_M = (200, 200, 200, 403, 403, 404, 200, 200, 404)  # org_a's keys and members read; others: 404
MANAGE_M = (403, 403, 403, 403, 403, 404, 403, 403, 404)  # the admin's answer is set per row
EVERYONE = (200,) * 9


def _manage(admin: int) -> tuple[int, ...]:
    return (admin, *MANAGE_M[1:])


MESSAGES = {"model": CHAT_MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
ROWS = [
    # -- inference -------------------------------------------------------------------------------------
    Row("POST", "/v1/chat/completions", CHAT_ALL, kw=lambda w: {"json": CHAT}),
    Row("POST", f"{API}/chat/completions", CHAT_ALL, kw=lambda w: {"json": CHAT}),
    Row("POST", "/v1/messages", CHAT_ALL, kw=lambda w: {"json": MESSAGES}),
    Row("POST", f"{API}/messages", CHAT_ALL, kw=lambda w: {"json": MESSAGES}),
    Row("POST", "/v1/embeddings", BASIC_TIER, kw=lambda w: {"json": {"model": "bge-m3", "input": "x"}}),
    Row(
        "POST",
        f"{API}/embeddings/generate",
        BASIC_TIER,
        kw=lambda w: {"json": {"model": "bge-m3", "input": "x"}},
    ),
    Row(
        "POST",
        "/v1/rerank",
        BASIC_TIER,
        kw=lambda w: {"json": {"model": "bge-reranker-v2-m3", "query": "q", "documents": ["a"]}},
    ),
    Row(
        "POST",
        f"{API}/rerank",
        BASIC_TIER,
        kw=lambda w: {"json": {"model": "bge-reranker-v2-m3", "query": "q", "documents": ["a"]}},
    ),
    Row("POST", "/v1/audio/transcriptions", BASIC_TIER, kw=_audio),
    Row("POST", f"{API}/audio/transcriptions", BASIC_TIER, kw=_audio),
    Row(
        "POST",
        f"{API}/audio/tts",
        PRO_TIER,
        kw=lambda w: {"json": {"model": "minimax-speech-02-hd", "input": "x"}},
    ),
    Row(
        "POST",
        f"{API}/deployments/{{deployment_id}}/chat/completions",
        (200, 200, 200, 200, 403, 404, 200, 403, 404),
        f"{API}/deployments/dep_a/chat/completions",
        lambda w: {"json": CHAT},
    ),
    Row(
        "POST",
        f"{API}/deployments/{{deployment_id}}/chat/completions",
        (404, 404, 404, 404, 404, 200, 200, 200, 200),
        f"{API}/deployments/dep_b/chat/completions",
        lambda w: {"json": CHAT},
    ),
    Row(
        "POST",
        f"{API}/orgs/{{org_id}}/deployments/{{deployment_id}}/chat/completions",
        (200, 200, 200, 200, 403, 404, 200, 403, 404),
        f"{API}/orgs/org_a/deployments/dep_a/chat/completions",
        lambda w: {"json": CHAT},
    ),
    Row(
        "POST",
        f"{API}/orgs/{{org_id}}/deployments/{{deployment_id}}/chat/completions",
        (404,) * 9,  # dep_b is not org_a's: as if it did not exist
        f"{API}/orgs/org_a/deployments/dep_b/chat/completions",
        lambda w: {"json": CHAT},
    ),
    Row(
        "POST",
        f"{API}/deployments/{{deployment_id}}/embeddings",
        (200, 200, 200, 403, 403, 404, 200, 403, 404),  # scoped: its grant is dep_a
        f"{API}/deployments/dep_e/embeddings",
        lambda w: {"json": {"input": "x"}},
    ),
    Row(
        "POST",
        f"{API}/deployments/{{deployment_id}}/embeddings",
        (400, 400, 400, 400, 403, 404, 400, 403, 404),  # dep_a serves a chat model
        f"{API}/deployments/dep_a/embeddings",
        lambda w: {"json": {"input": "x"}},
    ),
    Row(
        "GET",
        f"{API}/deployments/{{deployment_id}}/models",
        (200, 200, 200, 200, 403, 404, 200, 403, 404),
        f"{API}/deployments/dep_a/models",
    ),
    # -- catalog and metrics ---------------------------------------------------------------------------
    Row("GET", f"{API}/models", EVERYONE),
    Row("GET", f"{API}/models/available", EVERYONE),
    Row("GET", "/v1/models", EVERYONE),
    Row("GET", f"{API}/inference/metrics", EVERYONE),  # each sees its own org's series only
    Row(
        "GET",
        f"{API}/deployments/{{deployment_id}}/metrics",
        (200, 200, 200, 200, 403, 404, 200, 200, 404),
        f"{API}/deployments/dep_a/metrics",
    ),
    # -- deployments -----------------------------------------------------------------------------------
    Row("POST", f"{API}/deployments", (202, 403, 403, 403, 403, 403, 403, 403, 202), kw=_spec),
    Row("GET", f"{API}/deployments", EVERYONE),
    Row("POST", f"{API}/gitops/stacks", (202, 403, 403, 403, 403, 403, 403, 403, 202), kw=_git_stack),
    Row("GET", f"{API}/deployments/{{deployment_id}}", READ_M, _dep_m()),
    Row(
        "GET",
        f"{API}/deployments/{{deployment_id}}",
        (404, 404, 404, 404, 404, 200, 200, 200, 200),
        f"{API}/deployments/dep_b",
    ),
    Row("GET", f"{API}/deployments/{{deployment_id}}/sla", READ_M, _dep_m("/sla")),
    Row("GET", f"{API}/deployments/{{deployment_id}}/cost", READ_M, _dep_m("/cost")),
    Row(
        "PATCH",
        f"{API}/deployments/{{deployment_id}}/scaling",
        _manage(202),
        _dep_m("/scaling"),
        lambda w: {"json": {"min_replicas": 1, "max_replicas": 2}},
    ),
    Row("POST", f"{API}/deployments/{{deployment_id}}/refresh", _manage(202), _dep_m("/refresh")),
    Row("POST", f"{API}/deployments/{{deployment_id}}/up", _manage(202), _dep_m("/up")),
    Row(
        "PATCH",
        f"{API}/deployments/{{deployment_id}}/sla",
        _manage(200),
        _dep_m("/sla"),
        lambda w: {"json": {"ttft_target_ms": 2000}},
    ),
    Row(
        "PATCH",
        f"{API}/deployments/{{deployment_id}}/routing",
        _manage(200),
        _dep_m("/routing"),
        lambda w: {"json": {"routing": "least_load"}},
    ),
    Row(
        "POST",
        f"{API}/deployments/{{deployment_id}}/permissions",
        _manage(201),
        _dep_m("/permissions"),
        _grant,
    ),
    Row("DELETE", f"{API}/deployments/{{deployment_id}}/permissions/{{api_key_id}}", _manage(200), _granted),
    Row(
        "POST",
        f"{API}/deployments/{{deployment_id}}/webhooks",
        _manage(201),
        _dep_m("/webhooks"),
        lambda w: {"json": {"url": "http://127.0.0.1:9/hook"}},  # events sent there are refused locally
    ),
    # -- uploads (for dep_u, org_a's): the right to manage the deployment -------------------------------
    Row(
        "POST",
        f"{API}/models/uploads",
        _manage(201),
        kw=lambda w: {"json": {"name": f"u{next(w.names)}", "deployment_id": "dep_u", "size": 64}},
    ),
    # authorized before its body is read: a key that manages nothing anywhere is 403 at once; then the file
    # (and the deployment, named in the body) are checked
    Row("POST", f"{API}/models/upload", (422, 403, 403, 403, 403, 403, 403, 403, 404), kw=_not_gguf),
    Row(
        "PATCH",
        f"{API}/models/uploads/{{upload_id}}",
        _manage(204),
        lambda w: f"{API}/models/uploads/{w.upload()}",
        _bytes,
    ),
    Row(
        "GET",
        f"{API}/models/uploads/{{upload_id}}",
        _manage(200),
        lambda w: f"{API}/models/uploads/{w.upload()}",
    ),
    Row(
        "HEAD",
        f"{API}/models/uploads/{{upload_id}}",
        _manage(200),
        lambda w: f"{API}/models/uploads/{w.upload()}",
    ),
    Row(
        "DELETE",
        f"{API}/models/uploads/{{upload_id}}",
        _manage(200),
        lambda w: f"{API}/models/uploads/{w.upload()}",
    ),
    # last: it ends dep_m
    Row("DELETE", f"{API}/deployments/{{deployment_id}}", _manage(202), _dep_m()),
]


@pytest.fixture(scope="module")
def world(catalog: Catalog, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world_of(catalog, tmp_path_factory.mktemp("matrix")) as w:
        yield w


def test_every_route_is_in_the_matrix(world: World) -> None:
    routes = {(m, t) for m, t, _ in world.r.gateway.router.templates}
    covered = {(row.method, row.template) for row in ROWS}
    assert routes - UNAUTHENTICATED == covered, (routes - UNAUTHENTICATED) ^ covered


def test_matrix(world: World) -> None:
    """Every route x every key kind x own and other org: exactly as designed, never a 5xx."""
    wrong: list[str] = []
    for row in ROWS:
        for name, want in zip(KEYS, row.expected, strict=True):
            path = row.path(world) if callable(row.path) else row.path or row.template
            kw = row.kw(world) if row.kw else {}
            resp = world.call(row.method, path, world.tokens[name], **kw)
            if resp.status_code != want:
                wrong.append(
                    f"{name} {row.method} {path}: {resp.status_code} {resp.text[:120]}, designed {want}"
                )
            elif resp.status_code >= 400 and row.method != "HEAD":
                assert "error" in resp.json(), resp.text
            world.settled()
    assert not wrong, "\n".join(wrong)


def test_bad_keys_get_401_everywhere(world: World) -> None:
    tokens = {
        "revoked": world.keys.revoked,
        "expired": world.keys.expired,
        "malformed": "ak_live_short",
        "unknown": keymod.generate(),
        "missing": None,
    }
    for row in ROWS:
        path = row.path(world) if callable(row.path) else row.path or row.template
        for name in BAD_KEYS:
            assert world.call(row.method, path, tokens[name]).status_code == 401, (
                f"{name} on {row.method} {path}"
            )


def test_grant_then_revoke_takes_effect(world: World) -> None:
    keys, url = world.keys, f"{API}/deployments/dep_a"
    other = keys.ids["scoped_other"]

    def chat() -> int:
        return world.call("POST", f"{url}/chat/completions", keys.scoped_other, json=CHAT).status_code

    assert world.admin("POST", f"{url}/permissions", json={"api_key_id": other}).status_code == 201
    assert chat() == 200
    assert world.admin("DELETE", f"{url}/permissions/{other}").status_code == 200
    assert chat() == 403
    assert world.admin("DELETE", f"{url}/permissions/{other}").status_code == 404
    bad = world.admin("POST", f"{url}/permissions", json={"api_key_id": "key_nope"})
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "api_key_not_found"
    assert world.admin("POST", f"{url}/permissions", json={"api_key_id": 5}).status_code == 400


def test_keys_are_stored_only_as_hashes(store: Store, keys: Keys) -> None:
    rows = store._exec("SELECT prefix, hash FROM api_keys")
    dump = repr(rows)
    for token in (keys.admin, keys.standard, keys.scoped):
        assert token not in dump and token[:14] in dump  # only the display prefix is kept
    assert all(len(h) == 64 for _, h in rows)

"""The API contract (issue 13): /openapi.json describes every route the gateway serves, from the models its
handlers validate against; /docs shows it to people; and schemathesis, generating valid and invalid requests
for every operation of that document against a live gateway, finds no server error (issue 10)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from agentcloud.catalog import Catalog
from tests.gateway.harness import World, world_of

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


@pytest.fixture(scope="module")
def world(catalog: Catalog, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world_of(catalog, tmp_path_factory.mktemp("contract")) as w:
        yield w


@pytest.fixture(scope="module")
def contract(world: World) -> Any:
    schema = schemathesis.openapi.from_url(f"{world.r.url}/openapi.json")
    schema.config.update(base_url=world.r.url, headers={"Authorization": f"Bearer {world.keys.admin}"})
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=25, allow_x00=False
    )
    return schema


def test_the_document_covers_every_route(world: World) -> None:
    doc = requests.get(f"{world.r.url}/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.1")
    served = {(m.lower(), path) for m, path, _ in world.r.gateway.router.templates}
    described = {(m, path) for path, ops in doc["paths"].items() for m in ops}
    assert served == described
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatRequest")
    assert chat["responses"]["429"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    messages = doc["paths"]["/v1/messages"]["post"]["responses"]["400"]
    assert messages["content"]["application/json"]["schema"]["$ref"].endswith("/AnthropicErrorResponse")
    page = requests.get(f"{world.r.url}/docs", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/api/v1/public/deployments/{deployment_id}/scaling" in page.text
    assert requests.get(world.r.url + "/", timeout=10).json()["openapi"] == "/openapi.json"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_anywhere(contract: Any, world: World, mode: GenerationMode) -> None:
    """Every operation of the document, requests generated from its schemas (valid ones, then invalid ones),
    as the admin of org_a: answers are successes or 4xx, never 5xx. (Driven through hypothesis directly:
    schemathesis' pytest plugin does not run on pytest 9.)"""
    failures: list[str] = []
    operations = 0
    for result in contract.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(
            max_examples=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case: Any) -> None:
            response = case.call(timeout=15)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}"
                )

        try:
            call()
        except Unsatisfiable:  # nothing of this operation can be made invalid (a GET without parameters)
            assert mode is GenerationMode.NEGATIVE
    served = [m for m, _, _ in world.r.gateway.router.templates if m != "HEAD"]  # HEAD: not generated
    assert operations == len(served), operations
    assert not failures, "\n".join(failures[:20])


def test_the_document_is_valid_openapi_3_1(world: World) -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    doc = requests.get(f"{world.r.url}/openapi.json", timeout=10).json()
    validate(doc)  # raises with the first problem
    broken = {**doc, "paths": {"/x": {"get": {"responses": {"200": {}}}}}}  # a response needs a description
    with pytest.raises(OpenAPIValidationError):
        validate(broken)

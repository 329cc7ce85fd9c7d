"""`plan --live`: pydo against a local server that answers like GET /v2/sizes."""

from __future__ import annotations

import json

import pytest

from agentcloud.catalog import Catalog
from agentcloud.cli import main
from agentcloud.errors import LiveCheckError
from agentcloud.live import check, fetch_sizes
from agentcloud.planner import plan
from agentcloud.spec import DeploymentSpec
from tests.fake_digitalocean import LAST, SIZES, TOKEN, fake_digitalocean


def test_fetch_follows_pagination() -> None:
    with fake_digitalocean() as url:
        sizes = fetch_sizes(TOKEN, endpoint=url)
    assert set(sizes) == {s["slug"] for s in SIZES}
    assert len([r for r in LAST[0].requests if r.startswith("GET /v2/sizes")]) == 3
    assert sizes["gpu-h100x1-80gb"].regions == ("nyc2", "tor1")


def test_bad_token_is_a_clear_error() -> None:
    with fake_digitalocean() as url, pytest.raises(LiveCheckError, match=r"401.*DIGITALOCEAN_TOKEN"):
        fetch_sizes("wrong", endpoint=url)


def test_unreachable_endpoint() -> None:
    with pytest.raises(LiveCheckError, match="could not reach"):
        fetch_sizes(TOKEN, endpoint="http://127.0.0.1:9", timeout_s=1)


def _plan(catalog: Catalog, gpu: str, region: str):  # type: ignore[no-untyped-def]
    spec = DeploymentSpec(
        name="x-1", model_id="llama-3.1-8b-instruct", gpu_type=gpu, region=region, preset="cost"
    )
    return plan(spec, catalog)


def test_offered_missing_and_elsewhere(catalog: Catalog) -> None:
    with fake_digitalocean() as url:
        sizes = fetch_sizes(TOKEN, endpoint=url)
    assert check("a", _plan(catalog, "h100", "nyc2"), sizes).offered
    elsewhere = check("b", _plan(catalog, "h100", "ams3"), sizes)
    assert not elsewhere.offered and elsewhere.regions_with_size == ("nyc2", "tor1")
    assert "regions with gpu-h100x1-80gb now: nyc2, tor1" in elsewhere.note
    sold_out = check("c", _plan(catalog, "l40s", "tor1"), sizes)
    assert not sold_out.offered and "not available" in sold_out.note
    contract = check("d", _plan(catalog, "mi325x", "nyc2"), sizes)
    assert not contract.offered and "contract-only" in contract.note


def test_cli_live(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with fake_digitalocean() as url:
        monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
        monkeypatch.setenv("DIGITALOCEAN_API_ENDPOINT", url)
        code = main(["plan", "prod-inference", "latency-8b", "--json", "--live"])
    out = json.loads(capsys.readouterr().out)
    live = {row["stack"]: row for row in out["live"]}
    assert live["prod-inference"]["offered"] is False  # the local server has h200 only in atl1
    assert live["prod-inference"]["regions_with_size"] == ["atl1"]
    assert live["latency-8b"]["offered"] is False and "nyc2, tor1" in live["latency-8b"]["note"]
    assert code == 1


def test_cli_live_needs_a_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DIGITALOCEAN_TOKEN", raising=False)
    monkeypatch.delenv("DIGITALOCEAN_ACCESS_TOKEN", raising=False)
    assert main(["plan", "prod-inference", "--live"]) == 2
    assert "DIGITALOCEAN_TOKEN" in capsys.readouterr().err

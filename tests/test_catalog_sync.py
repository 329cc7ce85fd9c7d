"""`agentcloud catalog sync` against a local stand-in of DigitalOcean's GET /v2/sizes (issue 14's bar):
exactly the values that differ are rewritten, every comment and line of layout is kept, `plan` shows the new
$/h, and `--check` fails before and passes after. Also the in-place YAML editor it is built on."""

from __future__ import annotations

import datetime
import difflib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from agentcloud.catalog import Catalog, load_catalog
from agentcloud.catalog_sync import catalog_age
from agentcloud.cli import main
from agentcloud.errors import InfraError
from agentcloud.yaml_edit import set_value
from tests.conftest import ROOT
from tests.fake_digitalocean import TOKEN, fake_digitalocean


def sizes_of(catalog: Catalog, **prices: float) -> list[dict[str, Any]]:
    """What the API would list if the catalog were exactly right, with some prices changed."""
    out = []
    for name, gpu in catalog.gpu_types.items():
        if gpu.contract_only:
            continue
        out.append(
            {
                "slug": gpu.size_slug,
                "available": True,
                "regions": catalog.regions_offering(name),
                "price_hourly": prices.get(name, gpu.hourly_usd),
            }
        )
    return out


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of this repository's project (its presets.yaml a whole catalog), as the current directory."""
    for name in ("Pulumi.yaml", "presets.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "stacks", tmp_path / "stacks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTCLOUD_PROJECT", raising=False)
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
    return tmp_path


def test_sync_rewrites_exactly_what_differs_and_keeps_every_comment(
    project: Path, catalog: Catalog, capsys: pytest.CaptureFixture[str]
) -> None:
    sizes = sizes_of(catalog, h100=4.99, h200=5.1)
    l40s = next(s for s in sizes if s["slug"] == "gpu-l40sx1-48gb")
    l40s["regions"] = ["tor1"]  # gone from ams3
    before = (project / "presets.yaml").read_text()
    with fake_digitalocean(sizes) as url:
        endpoint = ["--api-endpoint", url]
        assert main(["catalog", "sync", "--check", *endpoint]) == 1
        out = capsys.readouterr().out
        assert "gpu_types.h100.hourly_usd: 4.41 -> 4.99" in out and "3 value(s) differ" in out, out
        assert (project / "presets.yaml").read_text() == before  # --check changes nothing
        assert main(["catalog", "sync", *endpoint]) == 0
        out = capsys.readouterr().out
        assert "-    hourly_usd: 4.41\n+    hourly_usd: 4.99" in out  # the diff is printed
        assert main(["catalog", "sync", "--check", *endpoint]) == 0
    after = (project / "presets.yaml").read_text()
    delta = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    removed = [line[2:] for line in delta if line.startswith("- ") and "checked:" not in line]
    added = [line[2:] for line in delta if line.startswith("+ ") and "checked:" not in line]
    assert sorted(removed) == sorted(
        ["    hourly_usd: 4.41", "    hourly_usd: 4.47", "    gpu_types: [h100, h100_8, l40s]"]
    ), removed
    assert sorted(added) == sorted(
        ["    hourly_usd: 4.99", "    hourly_usd: 5.1", "    gpu_types: [h100, h100_8]"]
    ), added
    today = datetime.date.today()
    renewed = [line for line in delta if line.startswith("+ ")]
    assert sum(f"    checked: {{date: {today}, via: GET /v2/sizes}}" == line[2:] for line in renewed) == len(
        sizes
    ) + len(catalog.regions)
    comments = [line for line in before.splitlines() if line.lstrip().startswith("#")]
    assert comments and all(c in after.splitlines() for c in comments)
    synced = load_catalog()
    assert synced.gpu_types["h100"].hourly_usd == 4.99 and "l40s" not in synced.regions["ams3"].gpu_types
    assert synced.regions["tor1"].gpu_types == catalog.regions["tor1"].gpu_types  # unchanged
    mi325x = synced.gpu_types["mi325x"].checked  # contract-only: never in the list, left alone
    assert mi325x is not None and mi325x.date < today
    from agentcloud.planner import plan
    from agentcloud.spec import load_stack

    hourly = plan(load_stack(project / "stacks" / "Pulumi.latency-8b.yaml", synced), synced).hourly_usd
    assert 4.99 <= hourly < 5.1  # the new price (and the model-cache volume's share)
    assert main(["plan", "latency-8b"]) == 0
    out = capsys.readouterr().out
    oldest, _ = catalog_age(synced)
    assert f" {hourly:.2f} " in out and f"last checked {oldest}" in out, out


def test_sync_into_an_overlay_leaves_the_shipped_catalog_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog: Catalog, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentcloud.project import shipped_catalog

    monkeypatch.delenv("AGENTCLOUD_PROJECT", raising=False)
    assert main(["init", str(tmp_path / "demo")]) == 0
    monkeypatch.chdir(tmp_path / "demo")
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
    shipped = shipped_catalog().read_text()
    overlay = (tmp_path / "demo" / "presets.yaml").read_text()
    with fake_digitalocean(sizes_of(catalog, h100=4.99)) as url:
        assert main(["catalog", "sync", "--api-endpoint", url]) == 0
    capsys.readouterr()
    assert shipped_catalog().read_text() == shipped
    text = (tmp_path / "demo" / "presets.yaml").read_text()
    assert text.startswith(overlay)  # the overlay's comments first, then what sync added
    assert "  h100:\n    hourly_usd: 4.99\n" in text
    assert load_catalog().gpu_types["h100"].hourly_usd == 4.99
    assert main(["plan", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert 4.99 <= planned["plans"][0]["hourly_usd"] < 5.1 and planned["catalog"]["oldest_check"]


def test_sync_needs_a_token_and_says_so(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DIGITALOCEAN_TOKEN")
    monkeypatch.delenv("DIGITALOCEAN_ACCESS_TOKEN", raising=False)
    assert main(["catalog", "sync"]) == 2
    assert "export DIGITALOCEAN_TOKEN" in capsys.readouterr().err


def test_editor_replaces_inserts_and_keeps_comments() -> None:
    text = "# top\na:\n  b: 1   # why b\n\n  c: [x, y]\nd: 2\n"
    out = set_value(text, "f.yaml", ("a", "b"), 5)
    assert out == "# top\na:\n  b: 5   # why b\n\n  c: [x, y]\nd: 2\n"
    out = set_value(out, "f.yaml", ("a", "c"), ["y"])
    assert "  c: [y]\n" in out
    out = set_value(
        out, "f.yaml", ("a", "e", "f"), {"date": datetime.date(2026, 11, 30), "via": "GET /v2/sizes"}
    )
    inserted = "  e:\n    f: {date: 2026-11-30, via: GET /v2/sizes}\n"
    assert out == "# top\na:\n  b: 5   # why b\n\n  c: [y]\n" + inserted + "d: 2\n"
    out = set_value(out, "f.yaml", ("g", "h"), 1.5)
    assert out.endswith("d: 2\ng:\n  h: 1.5\n")
    with pytest.raises(InfraError, match=r"f.yaml:2: a is not a one-line value"):
        set_value(out, "f.yaml", ("a",), 3)


def test_a_region_that_takes_no_new_droplets_offers_nothing(catalog: Catalog) -> None:
    from agentcloud.catalog_sync import compare
    from agentcloud.live import SizeOffer

    sizes = {
        s["slug"]: SizeOffer(s["slug"], True, tuple(s["regions"]), s["price_hourly"])
        for s in sizes_of(catalog)
    }
    regions = {"ams3": {"slug": "ams3", "name": "Amsterdam 3", "available": False}}
    changes, notes, _ = compare(catalog, sizes, regions)
    assert [str(c) for c in changes] == ["regions.ams3.gpu_types: ['h100', 'h100_8', 'l40s'] -> []"]
    assert "region ams3 takes no new droplets now (GET /v2/regions)" in notes

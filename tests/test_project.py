"""agentcloud in the user's own repository: the project found from the current directory upward, `init`, the
catalog overlay and template overrides, and the finished messages of the mistakes a newcomer makes there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentcloud.catalog import load_catalog
from agentcloud.cli import main
from agentcloud.document import overlay, parse_document
from agentcloud.errors import CatalogError
from agentcloud.project import find_project
from agentcloud.render import render
from tests.conftest import STACKS


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    """A repository made by `agentcloud init`, as the current directory."""
    monkeypatch.delenv("AGENTCLOUD_PROJECT", raising=False)
    assert main(["init", str(tmp_path / "demo")]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path / "demo")
    return tmp_path / "demo"


def test_init_writes_a_repository_that_plans_at_once(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = {str(p.relative_to(demo)) for p in demo.rglob("*") if p.is_file()}
    assert {
        "Pulumi.yaml",
        "__main__.py",
        "presets.yaml",
        "stacks/Pulumi.example.yaml",
        "policy/PulumiPolicy.yaml",
        "policy/__main__.py",
        ".github/workflows/deployments.yml",
        ".gitignore",
        "README.md",
        "requirements.txt",
    } <= files
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    # this project's stacks only: none of the tool's own repository
    assert "example" in out and "fits" in out
    assert not any(f"{p.name.split('.')[1]} " in out for p in STACKS.glob("Pulumi.*.yaml"))
    assert "# demo" in (demo / "README.md").read_text()


def test_stack_names_resolve_in_the_project_found_upward(
    demo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (demo / "stacks" / "Pulumi.mine.yaml").write_text(
        (demo / "stacks" / "Pulumi.example.yaml").read_text().replace("name: example", "name: mine")
    )
    monkeypatch.chdir(demo / "stacks")
    assert main(["plan", "mine"]) == 0
    assert "mine" in capsys.readouterr().out
    found = find_project()
    assert found is not None and found.root == demo.resolve()
    assert main(["plan", "nope"]) == 2
    err = capsys.readouterr().err
    assert str(demo.resolve() / "stacks" / "Pulumi.nope.yaml") in err and "file not found" in err


def test_outside_any_project_the_cli_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AGENTCLOUD_PROJECT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["plan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no Pulumi.yaml in {tmp_path.resolve()} or any folder above it")
    assert "agentcloud init" in err and "Traceback" not in err
    assert main(["catalog", "gpus"]) == 0  # the catalog needs no project
    monkeypatch.setenv("AGENTCLOUD_PROJECT", str(tmp_path / "elsewhere"))
    assert main(["plan"]) == 2
    assert "AGENTCLOUD_PROJECT=" in capsys.readouterr().err


def test_init_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert main(["init", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert "already exists and is not an empty folder; nothing was written" in err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]


def test_the_overlay_changes_a_price_and_keeps_the_rest(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = load_catalog()
    (demo / "presets.yaml").write_text("gpu_types:\n  h100:\n    hourly_usd: 2.5\n")
    catalog = load_catalog()
    assert catalog.gpu_types["h100"].hourly_usd == 2.5
    assert catalog.gpu_types["h100"].size_slug == shipped.gpu_types["h100"].size_slug
    assert catalog.models.keys() == shipped.models.keys()
    assert main(["plan", "--json"]) == 0
    assert 2.5 <= json.loads(capsys.readouterr().out)["plans"][0]["hourly_usd"] < 2.6


def test_the_starter_overlay_examples_are_valid_when_uncommented(demo: Path) -> None:
    text = (demo / "presets.yaml").read_text()
    body = "\n".join(line[2:] for line in text.splitlines() if line.startswith("# ") and ":" in line[:40])
    examples = body[body.index("gpu_types:") :]
    (demo / "presets.yaml").write_text(examples)
    catalog = load_catalog()
    assert catalog.gpu_types["h100"].hourly_usd == 2.99
    assert catalog.presets["latency"].max_num_seqs == 16
    assert catalog.models["my-finetune-8b"].deployable


def test_a_problem_in_the_overlay_points_at_the_overlay(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (demo / "presets.yaml").write_text("# mine\ngpu_types:\n  h100:\n    hourly_usd: -1\n")
    with pytest.raises(CatalogError) as err:
        load_catalog()
    assert f"{demo / 'presets.yaml'}:4: gpu_types.h100.hourly_usd" in str(err.value)
    assert main(["plan"]) == 2
    assert f"{demo / 'presets.yaml'}:4" in capsys.readouterr().err


def test_overlay_merges_mappings_replaces_values_and_null_removes() -> None:
    base = parse_document("a:\n  x: 1\n  y: [1, 2]\n  z: {q: 3}\n  v: 5\nb: 2\n", "base.yaml")
    top = parse_document("a:\n  y: [9]\n  z: null\n  w: 4\n  v: null\n", "top.yaml")
    merged = overlay(base, top)
    assert merged.data == {"a": {"x": 1, "y": [9], "w": 4, "v": None}, "b": 2}
    assert merged.origin_of(("a", "x")) == "base.yaml" and merged.line_of(("a", "x")) == 2
    assert merged.origin_of(("a", "y", 0)) == "top.yaml" and merged.line_of(("a", "y", 0)) == 2
    assert merged.origin_of(("a", "w")) == "top.yaml" and merged.line_of(("a", "w")) == 4
    assert ("a", "z") not in merged.lines


def test_a_project_template_overrides_the_shipped_one(demo: Path) -> None:
    from agentcloud.planner import plan
    from agentcloud.spec import load_stack

    catalog = load_catalog()
    serving = plan(load_stack(demo / "stacks" / "Pulumi.example.yaml", catalog), catalog)
    before = render(serving).user_data
    (demo / "templates" / "host").mkdir(parents=True)
    (demo / "templates" / "host" / "healthcheck.sh.j2").write_text("#!/bin/sh\n# our own health check\n")
    after = render(serving).user_data
    assert "our own health check" in after and "our own health check" not in before


def test_a_name_of_the_wrong_form_is_explained_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "Pulumi.bad.yaml"
    stack.write_text(
        "config:\n  agent-cloud:deployment:\n    name: Bad_Name\n    model_id: llama-3.1-8b-instruct\n"
        "    region: tor1\n    preset: latency\n"
    )
    assert main(["plan", str(stack)]) == 2
    err = capsys.readouterr().err
    assert f"{stack}:3: config.agent-cloud:deployment.name: not a valid value here (got 'Bad_Name')" in err
    assert "lowercase letters, digits and '-'" in err and "^[a-z]" not in err


def test_an_unexpected_failure_is_one_line_asking_for_a_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    cli = sys.modules["agentcloud.cli.main"]  # the module (agentcloud.cli.main is also the function's name)

    def broken(*_: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(cli, "load_catalog", broken)
    monkeypatch.delenv("AGENTCLOUD_DEBUG", raising=False)
    assert main(["catalog", "gpus"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: agentcloud ") and "This is a bug" in err and "Traceback" not in err
    monkeypatch.setenv("AGENTCLOUD_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["catalog", "gpus"])

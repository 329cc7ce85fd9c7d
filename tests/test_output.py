"""Output for people: colour only on a terminal (and never with NO_COLOR), progress that rewrites one line on
a terminal and prints a line per tenth elsewhere, aligned tables."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from agentcloud.cli import main
from agentcloud.cli.output import Progress, paint, table


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert paint("error:", "red", Terminal()) == "\033[31merror:\033[0m"
    assert paint("error:", "red", io.StringIO()) == "error:"
    monkeypatch.setenv("NO_COLOR", "1")
    assert paint("error:", "red", Terminal()) == "error:"


def test_progress_on_a_terminal_and_in_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    log = io.StringIO()
    bar = Progress("sending m.gguf", 1000, stream=log)
    for done in range(0, 1001, 50):
        bar.update(done)
    bar.finish()
    lines = log.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("sending m.gguf: 1.0 KB of 1.0 KB (100%")
    tty = Terminal()
    bar = Progress("sending m.gguf", 1000, stream=tty)
    bar.update(500)
    bar.update(1000)
    bar.finish()
    text = tty.getvalue()
    assert text.count("\n") == 1 and "\r\033[K" in text and "(50%" in text and "(100%" in text


def test_tables_align_under_their_header(capsys: pytest.CaptureFixture[str]) -> None:
    table([("NAME", "STATE"), ("a-long-name", "active"), ("b", "degraded")], rule=True, colour_column=1)
    lines = capsys.readouterr().out.splitlines()
    assert [line.index(s) for line, s in zip(lines[2:], ("active", "degraded"), strict=True)] == [13, 13]
    assert lines[1].startswith("-----------  --------")


def test_keys_list_is_a_table_or_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    db = str(tmp_path / "gw.sqlite3")
    assert main(["gateway", "--database", db, "keys", "list"]) == 0
    assert "(no keys" in capsys.readouterr().out
    assert main(["gateway", "--database", db, "orgs", "create", "acme", "--id", "org_acme"]) == 0
    assert main(["gateway", "--database", db, "keys", "create", "--org", "org_acme", "--plan", "basic"]) == 0
    capsys.readouterr()
    assert main(["gateway", "--database", db, "keys", "list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "PREFIX", "ORG", "PLAN", "KIND", "STATE", "NAME"]
    assert row.split()[2:6] == ["org_acme", "basic", "standard", "active"]
    assert main(["gateway", "--database", db, "keys", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["org_id"] == "org_acme"

"""Usage survives a `kill -9` of the gateway: every call is journaled before its response's last byte, and
the journal reaches the store exactly once (issue 10)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from agentcloud.catalog import Catalog
from agentcloud.gateway.journal import UsageJournal, entry, read_segment
from agentcloud.store import Store
from tests.gateway.fake_upstream import FakeUpstream
from tests.gateway.harness import CHAT_MODEL, PEPPER, ROOT, Keys, gateway_process, wait_for


def _entry(tokens: int = 10) -> list[object]:
    return entry(60.0, "key_a", "org_a", "m", None, False, tokens, 1, 0.0, 2.5)


def _write(store: Store) -> Any:
    return lambda segment, rows: store.add_usage(rows, segment=segment)


def _usage(store: Store) -> tuple[int, int]:
    rows = store._exec("SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(prompt_tokens), 0) FROM usage")
    return int(rows[0][0]), int(rows[0][1])


def test_a_segment_reaches_the_store_once(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.sqlite3"))
    journal = UsageJournal(tmp_path / "j", store.store_id(), "p1")
    for _ in range(3):
        journal.append(_entry())
    assert journal.seal()
    sealed = journal.sealed
    assert sealed is not None
    calls, rows = read_segment(sealed.path)
    assert calls == 3
    # the store took it, then the process died before deleting the file: applying it again adds nothing
    assert store.add_usage(rows, segment=sealed.name)
    assert journal.apply(_write(store), rows) == 1
    assert _usage(store) == (3, 30)
    assert not list((tmp_path / "j").iterdir()), "an applied segment is deleted"


def test_a_store_that_is_down_keeps_the_segment(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.sqlite3"))
    journal = UsageJournal(tmp_path / "j", store.store_id(), "p1")
    journal.append(_entry())
    assert journal.seal()
    assert journal.sealed is not None
    first = read_segment(journal.sealed.path)[1]

    def down(segment: str, rows: list[Any]) -> bool:
        raise ConnectionError("store down")

    with pytest.raises(ConnectionError):
        journal.apply(down, first)
    journal.append(_entry())  # goes on in the current segment; one sealed segment waits
    assert not journal.seal()
    assert journal.apply(_write(store), first) == 1
    assert journal.seal() and journal.sealed is not None
    assert journal.apply(_write(store), read_segment(journal.sealed.path)[1]) == 1
    assert _usage(store) == (2, 20)


def test_orphans_of_this_store_are_applied_and_a_torn_line_skipped(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.sqlite3"))
    other = Store(str(tmp_path / "other.sqlite3"))
    folder = tmp_path / "j"
    dead = UsageJournal(folder, store.store_id(), "dead")
    dead.append(_entry())
    dead.append(_entry())
    assert dead.current is not None
    dead.current.write(b'[60.0, "key_a", "org_a"')  # killed in the middle of a copy
    foreign = UsageJournal(folder, other.store_id(), "foreign")
    foreign.append(_entry())
    alive = UsageJournal(folder, store.store_id(), "alive")
    alive.append(_entry())  # not sealed: its file is locked by a live journal

    survivor = UsageJournal(folder, store.store_id(), "survivor")
    assert survivor.apply(_write(store), []) == 0, "their writers live"
    dead.close()  # the kernel drops a killed process's locks
    foreign.close()
    assert survivor.apply(_write(store), []) == 1, "the dead one's segment (not another store's)"
    assert _usage(store) == (2, 20)
    left = sorted(p.name for p in folder.iterdir())
    assert len(left) == 2 and any("foreign" in n for n in left) and any("alive" in n for n in left), left


def test_kill_9_under_load_loses_no_completed_request(tmp_path: Path, upstream: FakeUpstream) -> None:
    db = tmp_path / "gw.sqlite3"
    store = Store(str(db))
    org = store.create_org("acme")
    _, token = store.create_key(PEPPER, org, "load", "enterprise")
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"models:\n  - model_id: {CHAT_MODEL}\n    base_url: {upstream.base_url}\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AGENTCLOUD_DATABASE": str(db),
        "AGENTCLOUD_KEY_PEPPER": PEPPER.decode(),
        "AGENTCLOUD_UPLOAD_DIR": str(tmp_path / "uploads"),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    completed: list[int] = []
    attempted: list[int] = []
    stop = threading.Event()

    def client(url: str, n: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        stream = n % 2 == 1
        body: dict[str, Any] = {
            "model": CHAT_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        }
        while not stop.is_set():
            attempted.append(1)
            try:
                r = session.post(f"{url}/v1/chat/completions", json=body, timeout=5)
                _ = r.content  # the whole body, chunked terminator included
            except requests.RequestException:
                return  # the gateway is gone
            if r.status_code == 200:
                completed.append(1)

    with gateway_process("data", env, logs, ("--routes", str(routes))) as gw:
        threads = [threading.Thread(target=client, args=(gw.url, n)) for n in range(6)]
        for t in threads:
            t.start()
        assert wait_for(lambda: len(completed) >= 300, 60), f"only {len(completed)} requests completed"
        time.sleep(0.35)  # between two flushes
        os.kill(gw.proc.pid, signal.SIGKILL)
        gw.proc.wait(10)
        stop.set()
        for t in threads:
            t.join(10)
    assert _usage(store)[0] < len(completed), "the test must kill the gateway before usage was flushed"
    journal = db.parent / "usage-journal"
    assert list(journal.glob("usage-*.jsonl")), "the killed gateway left its journal"
    with gateway_process("data", env, logs, ("--routes", str(routes))):
        assert wait_for(lambda: not list(journal.glob("usage-*.jsonl")), 10), "the journal was not applied"
    requests_metered = _usage(store)[0]
    assert len(completed) <= requests_metered <= len(attempted), (len(completed), requests_metered)


def test_a_segment_grows_past_its_first_size(tmp_path: Path) -> None:
    from agentcloud.gateway.journal import INITIAL_BYTES

    store = Store(str(tmp_path / "s.sqlite3"))
    journal = UsageJournal(tmp_path / "j", store.store_id(), "p1")
    n = INITIAL_BYTES // 40  # about 60 bytes an entry: the segment doubles at least once
    for _ in range(n):
        journal.append(_entry())
    assert journal.current is not None and journal.current.mm is not None
    assert len(journal.current.mm) > INITIAL_BYTES
    calls, rows = read_segment(journal.current.path)
    assert calls == n and sum(r.requests for r in rows) == n


def test_a_long_store_outage_keeps_memory_bounded_and_loses_nothing(
    catalog: Catalog, store: Store, keys: Keys, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Past `samples_max` distinct rollups in memory, the segment is read back from its file: memory stops
    growing, and the store still gets every call."""
    from tests.gateway.harness import make_gateway, routes_for, running

    gateway = make_gateway(
        catalog, store, routes_for(upstream.base_url), tmp_path, samples_max=1, usage_flush_s=3600
    )
    with running(gateway) as r:
        accountant = r.gateway.data.accountant
        h = {"Authorization": f"Bearer {keys.admin}"}
        for model in (CHAT_MODEL, "gemma-3-27b-it", CHAT_MODEL, "gemma-3-27b-it", CHAT_MODEL):
            body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            assert requests.post(f"{r.url}/v1/chat/completions", json=body, headers=h, timeout=10).ok
        assert accountant.usage_overflow and len(accountant.usage) == 1  # the second model did not fit
        r.run(accountant.flush())
        assert wait_for(lambda: _usage(store)[0] == 5, 5)

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcloud.catalog import Catalog, load_catalog

ROOT = Path(__file__).resolve().parent.parent
STACKS = ROOT / "stacks"  # this repository's own stack files


E2E_REQUIRED = ROOT / ".venv" / "e2e-required"  # scripts/setup.sh writes it where it had root and every tool


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a machine that setup prepared for them, an end-to-end test that skips fails instead: CI runs them,
    never skips them."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and item.get_closest_marker("e2e") and E2E_REQUIRED.exists():
        report.outcome = "failed"
        report.longrepr = f"e2e test skipped on a machine set up for it ({E2E_REQUIRED}): {report.longrepr}"


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test writes what lands in the data directory (stores, journals, the program's state) into a
    folder of its own, never into the user's ~/.local/share/agentcloud."""
    monkeypatch.setenv("AGENTCLOUD_DATA_DIR", str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(ROOT / "presets.yaml")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """One real PostgreSQL for the session; tests reset its tables."""
    from tests.services import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    from tests.services import redis_server

    with redis_server() as url:
        yield url


@pytest.fixture
def mocks() -> Iterator[object]:
    """Pulumi mocks that record every resource. Pulumi's test runtime uses the main thread's current event
    loop, which other tests' asyncio.run() leave unset: give it one."""
    import asyncio

    import pulumi

    from tests.pulumi_mocks import RecordingMocks

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    m = RecordingMocks()
    pulumi.runtime.set_mocks(m, project="agent-cloud", stack="test", preview=False)
    yield m
    asyncio.set_event_loop(None)
    loop.close()

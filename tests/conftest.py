from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.catalog import Catalog, load_catalog

ROOT = Path(__file__).resolve().parent.parent


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

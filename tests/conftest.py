from __future__ import annotations

from pathlib import Path

import pytest

from infra.catalog import Catalog, load_catalog

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(ROOT / "presets.yaml")

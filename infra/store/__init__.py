"""Shared state: the one place the data and control planes meet (SQLite, or PostgreSQL for replicas)."""

from infra.store.coordination import JobRow, Sample
from infra.store.sql import StoreError, StoreUnavailable
from infra.store.store import Store, UsageRow

__all__ = ["JobRow", "Sample", "Store", "StoreError", "StoreUnavailable", "UsageRow"]

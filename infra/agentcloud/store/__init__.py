"""Shared state: the one place the data and control planes meet (SQLite, or PostgreSQL for replicas)."""

from agentcloud.store.coordination import JobRow, Sample
from agentcloud.store.sql import StoreError, StoreUnavailable
from agentcloud.store.store import Store, UsageRow

__all__ = ["JobRow", "Sample", "Store", "StoreError", "StoreUnavailable", "UsageRow"]

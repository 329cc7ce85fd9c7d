"""A bounded LRU cache whose entries expire after a TTL (key lookups, so revocations apply within the TTL)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
MISSING: Any = object()


class TtlCache(Generic[K, V]):
    """A bounded cache whose entries expire after a fixed time (keys, negative answers too)."""

    def __init__(self, maxsize: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.maxsize = maxsize
        self.ttl_s = ttl_s
        self.clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K, default: Any = None) -> Any:
        """The cached value, or ``default`` (pass MISSING to tell a cached None from a miss)."""
        item = self._data.get(key)
        if item is None:
            return default
        expires, value = item
        if expires < self.clock():
            del self._data[key]
            return default
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = (self.clock() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

"""Spreading requests over replicas: round robin, least load, and prefix affinity with bounded loads.

Prefix affinity: a request's affinity key is its leading content (the system prompt, or the first message). A
key has a home replica, chosen by load when the key is first seen and kept while the key is live, so the key's
requests meet that replica's prefix cache; recurring keys are spread evenly over the replicas (see `Ring`). A
request goes home unless home already holds ``ceil(load_factor * (total load + 1) / replicas)`` requests (the
bound of consistent hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam, 2018): then it goes to the
least loaded replica, so one hot key never piles up past its share. Every gateway process keeps its own homes:
no shared state on the hot path.

On llama.cpp replicas (slot counts read by the replica probe) the balancer also models each slot (`Slots`):
which key's prefix it holds, busy or idle, and the engine's queue; `Balancer.admit` then sends a request
where an idle slot holds its prefix, has it wait in the gateway for a busy one, and sends a miss to the slot
whose prefix is worth least. docs/routing.md says why and what it measured.

Loads are this process's requests in flight per replica (counted from the moment a request is sent: prefill is
load too), plus requests the engine itself reported waiting (from its /metrics, refreshed by the data plane's
replica probe). A replica the probe found unhealthy goes last; the circuit breaker (target.py) keeps failing
ones out and lets one probe request back in."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence

from agentcloud.catalog import Routing
from agentcloud.upstream.target import Target

KEY_TTL_S = 300.0  # a key (tenant) not seen for this long no longer holds a place on its replica
MAX_KEYS = 100_000
VIRTUAL_NODES = 64  # ring points per replica: an even share of keys with a handful of replicas
LOAD_FACTOR = 2.0  # a key stays home until home holds twice its share of the requests in flight


def point(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Ring:
    """The hash ring of one set of replicas, and the replica each live key calls home.

    A key seen for the first time is cached nowhere: it goes to the least loaded replica (ties: the fewest
    recurring keys, then the key's ring walk), which becomes its home, so prompts that share nothing are
    placed exactly as `least_load` places them. A key seen again is recurring (a tenant's system prompt, a
    conversation): recurring keys are kept spread evenly, and a home holding more than ``ceil(recurring keys /
    replicas)`` of them hands the key to the replica holding the fewest (one cold prefill, once), since
    hashing or first come alone can put 4 of 8 tenants on one of 3 replicas. A key keeps its home while it is
    live (seen within ``KEY_TTL_S``). Homes are kept per process; processes agree whenever loads are even, and
    a tenant placed differently by two processes has two warm homes."""

    def __init__(self, urls: Sequence[str]) -> None:
        # key -> [replica, last seen, times seen], least recently seen first
        self.homes: OrderedDict[int, list[float]] = OrderedDict()
        self.recurring = [0] * len(urls)
        pairs = sorted(
            (point(f"{url}#{v}".encode()), i) for i, url in enumerate(urls) for v in range(VIRTUAL_NODES)
        )
        self.points = [p for p, _ in pairs]
        self.owners = [i for _, i in pairs]

    def walk(self, key: int) -> list[int]:
        """Replica indexes in ring order from ``key``, each once."""
        start = bisect.bisect(self.points, key)
        seen: list[int] = []
        n = len(self.points)
        for k in range(n):
            owner = self.owners[(start + k) % n]
            if owner not in seen:
                seen.append(owner)
                if len(seen) == len(self.recurring):
                    break
        return seen

    def _forget(self, now: float) -> None:
        while self.homes:  # keys not seen for a while, oldest first
            old_key, (old_home, seen, times) = next(iter(self.homes.items()))
            if now - seen < KEY_TTL_S and len(self.homes) <= MAX_KEYS:
                return
            del self.homes[old_key]
            if times >= 2:
                self.recurring[int(old_home)] -= 1

    def home(self, key: int, loads: list[int], now: float | None = None) -> tuple[int, bool]:
        """The key's home, and whether the key was known (its prefix is likely cached there)."""
        now = time.monotonic() if now is None else now
        self._forget(now)
        entry = self.homes.get(key)
        if entry is None:
            rank = {replica: k for k, replica in enumerate(self.walk(key))}
            replica = min(rank, key=lambda i: (loads[i], self.recurring[i], rank[i]))
            self.homes[key] = [replica, now, 1]
            return replica, False
        replica = int(entry[0])
        entry[1], entry[2] = now, entry[2] + 1
        self.homes.move_to_end(key)
        if entry[2] == 2:
            self.recurring[replica] += 1
        if entry[2] >= 2 and self.recurring[replica] > math.ceil(sum(self.recurring) / len(self.recurring)):
            rank = {r: k for k, r in enumerate(self.walk(key))}
            fewest = min(rank, key=lambda i: (self.recurring[i], loads[i], rank[i]))
            if self.recurring[fewest] + 1 < self.recurring[replica]:  # moving must even things out
                self.recurring[replica] -= 1
                self.recurring[fewest] += 1
                entry[0] = fewest
                return fewest, False
        return replica, True


class Slots:
    """A llama.cpp replica's slots as this process's requests left them: the key whose prefix each slot holds
    (None: empty, or a request without a key), whether it is busy, and when it was last used; plus the
    requests sent while every slot was busy, which the engine queues and hands the first slot that frees.
    llama.cpp gives a request the idle slot holding its prompt's prefix, else the least recently used one."""

    def __init__(self, count: int, clock: Iterator[int]) -> None:
        self.keys: list[int | None] = [None] * count
        self.busy = [False] * count
        self.used = [0] * count
        self.queued: list[int | None] = []
        self.clock = clock  # shared by every replica's slots: last uses compare across replicas

    def _use(self, slot: int, key: int | None) -> None:
        self.keys[slot], self.busy[slot], self.used[slot] = key, True, next(self.clock)

    def holds(self, key: int, idle: bool) -> bool:
        return any(k == key and not (idle and b) for k, b in zip(self.keys, self.busy, strict=True))

    def victim(self) -> int | None:
        """The slot a request whose prefix no idle slot holds would take (None: every slot is busy)."""
        idle = [i for i, b in enumerate(self.busy) if not b]
        return min(idle, key=lambda i: self.used[i]) if idle else None

    def take(self, key: int | None) -> None:
        idle = [i for i, b in enumerate(self.busy) if not b]
        if not idle:
            self.queued.append(key)
            return
        slot = next((i for i in idle if key is not None and self.keys[i] == key), None)
        self._use(min(idle, key=lambda i: self.used[i]) if slot is None else slot, key)

    def give_back(self, key: int | None) -> None:
        slot = next((i for i, b in enumerate(self.busy) if b and self.keys[i] == key), None)
        if slot is None:  # still queued in the engine (or sent before the slots were known)
            if key in self.queued:
                self.queued.remove(key)
            return
        self.busy[slot], self.used[slot] = False, next(self.clock)
        if self.queued:
            self._use(slot, self.queued.pop(0))


class Balancer:
    """Orders the replicas for one request (best first; the rest are the fallback order) and tracks their
    load."""

    def __init__(self, load_factor: float = LOAD_FACTOR) -> None:
        self.load_factor = load_factor
        self.in_flight: dict[str, int] = {}  # base URL -> this process's requests in flight
        self.key_busy: dict[tuple[str, int], int] = {}  # (base URL, affinity key) -> requests in flight
        self.key_idle: dict[tuple[str, int], asyncio.Event] = {}  # set when a held request's key frees up
        self.waiting: dict[str, int] = {}  # base URL -> requests the engine reported waiting
        self.unhealthy: set[str] = set()
        self.turns: dict[tuple[str, ...], int] = {}
        self.rings: dict[tuple[str, ...], Ring] = {}
        self.slots: dict[str, int] = {}  # base URL -> llama.cpp slots (the probe reads /props)
        self.slot_state: dict[str, Slots] = {}  # base URL -> its slots as this process's requests left them
        self.clock = itertools.count(1)  # the slots' last uses, in one order across replicas
        # requests waiting in `admit`, in arrival order: per key, for a busy slot holding its prefix; under
        # None, misses for any slot they may take
        self.waiters: dict[int | None, deque[asyncio.Future[None]]] = {}

    def load(self, url: str) -> int:
        return self.in_flight.get(url, 0) + self.waiting.get(url, 0)

    def _slots(self, url: str) -> Slots | None:
        count = self.slots.get(url)
        if not count:
            return None
        state = self.slot_state.get(url)
        if state is None or len(state.keys) != count:  # new, or the engine came back with other settings
            state = self.slot_state[url] = Slots(count, self.clock)
        return state

    def acquire(self, target: Target, key: int | None = None) -> None:
        self.in_flight[target.base_url] = self.in_flight.get(target.base_url, 0) + 1
        state = self._slots(target.base_url)
        if state is not None:
            state.take(key)
        if key is not None:
            slot = (target.base_url, key)
            self.key_busy[slot] = self.key_busy.get(slot, 0) + 1

    def release(self, target: Target, key: int | None = None) -> None:
        left = self.in_flight.get(target.base_url, 0) - 1
        if left > 0:
            self.in_flight[target.base_url] = left
        else:
            self.in_flight.pop(target.base_url, None)
        state = self.slot_state.get(target.base_url)
        if state is not None:
            state.give_back(key)
        if self.waiters:  # the requests waiting for this key's slot look again, and the first miss waiting
            for waiter in self.waiters.get(key, ()) if key is not None else ():
                if not waiter.done():
                    waiter.set_result(None)
            self._wake_first_miss()
        if key is not None:
            slot = (target.base_url, key)
            busy = self.key_busy.get(slot, 0) - 1
            if busy > 0:
                self.key_busy[slot] = busy
            else:
                self.key_busy.pop(slot, None)
                idle = self.key_idle.pop(slot, None)
                if idle is not None:
                    idle.set()

    async def admit(self, targets: Sequence[Target], key: int, hold_s: float) -> list[Target]:
        """The order to send a prefix-aware request in, once it may go (``targets`` as `order` gave them).

        On llama.cpp replicas (slot counts known: the leading targets) the request waits here, up to
        ``hold_s``, while the slots holding its prefix are busy (sent now, it would take another slot, evict
        another key's prefix there and prefill again), and a request that misses everywhere waits while no
        replica has a slot it may take; the choice is made again whenever a request ends. Past ``hold_s`` a
        request whose prefix is busy takes a free slot elsewhere (a hot key gets a second copy), and one
        that still finds none goes to the first target, whose engine queues it. Elsewhere (no slot counts)
        a request whose key is in flight at the first target waits for it (`turn`)."""
        n = 0
        while n < len(targets) and self._slots(targets[n].base_url) is not None:
            n += 1
        if n == 0:
            if targets:
                await self.turn(targets[0], key, hold_s)
            return list(targets)
        urls = [t.base_url for t in targets[:n]]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hold_s
        patient, again = True, False
        while True:
            chosen, why = self._slot_for(urls, key, 0, patient)
            left = deadline - loop.time()
            if why is None:
                break
            if left <= 0:
                if not patient:
                    break
                patient = False
                continue
            kind = key if why == "turn" else None
            queue = self.waiters.setdefault(kind, deque())
            waiter: asyncio.Future[None] = loop.create_future()
            if again:  # looked at again and must wait on: it keeps its place
                queue.appendleft(waiter)
            else:
                queue.append(waiter)
            again = True
            try:
                async with asyncio.timeout(left):
                    await waiter
            except TimeoutError:
                pass
            except asyncio.CancelledError:  # the client went away
                if kind is None and waiter.done() and not waiter.cancelled():
                    self._wake_first_miss()  # after its wake: the next miss gets it
                raise
            finally:
                queue.remove(waiter)
                if not queue and self.waiters.get(kind) is queue:
                    del self.waiters[kind]
        return [targets[chosen]] + [t for i, t in enumerate(targets) if i != chosen]

    def _wake_first_miss(self) -> None:
        for waiter in self.waiters.get(None, ()):
            if not waiter.done():
                waiter.set_result(None)
                return

    async def turn(self, target: Target, key: int, hold_s: float) -> None:
        """Hold a request while its key already has one in flight at ``target`` (up to ``hold_s``, one held
        request per key): on an engine whose slots do not share a prefix, a second concurrent request of the
        same key would take another slot, evict another key's prefix there and prefill again."""
        slot = (target.base_url, key)
        if hold_s <= 0 or not self.key_busy.get(slot) or slot in self.key_idle:
            return
        idle = self.key_idle[slot] = asyncio.Event()
        self.in_flight[target.base_url] = self.in_flight.get(target.base_url, 0) + 1  # held here: load here
        try:
            async with asyncio.timeout(hold_s):
                await idle.wait()
        except TimeoutError:
            pass
        finally:
            self.release(target)
            if self.key_idle.get(slot) is idle:
                del self.key_idle[slot]

    def order(
        self, targets: Sequence[Target], policy: Routing, affinity: bytes | None = None
    ) -> list[Target]:
        """The replicas in the order to try them: the policy's choice first, unhealthy ones last."""
        if len(targets) < 2:
            return list(targets)
        down = [t for t in targets if t.base_url in self.unhealthy]
        up = [t for t in targets if t.base_url not in self.unhealthy] if down else list(targets)
        if policy is Routing.PREFIX_AWARE and affinity:  # the ring spans every replica, so keys stay put
            return [t for t in self._bounded(targets, point(affinity)) if t not in down] + down
        if len(up) < 2:
            return up + down
        rotated = self._rotated(up)
        if policy is Routing.ROUND_ROBIN:
            return rotated + down
        return sorted(rotated, key=lambda t: self.load(t.base_url)) + down  # least load, ties in turn

    def _rotated(self, targets: Sequence[Target]) -> list[Target]:
        urls = tuple(t.base_url for t in targets)
        turn = self.turns.get(urls, 0)
        self.turns[urls] = (turn + 1) % len(targets)
        return [targets[(turn + k) % len(targets)] for k in range(len(targets))]

    def _bounded(self, targets: Sequence[Target], key: int) -> list[Target]:
        urls = tuple(t.base_url for t in targets)
        ring = self.rings.get(urls)
        if ring is None:
            if len(self.rings) > 1024:  # replica sets change with scaling: keep the cache bounded
                self.rings.clear()
            ring = self.rings[urls] = Ring(urls)
        loads = [self.load(u) for u in urls]
        home, known = ring.home(key, loads)
        if not known and ring.homes[key][2] == 1:  # seen for the first time: placed as `least_load` places it
            home = ring.homes[key][0] = self._first(urls, loads)
        slotted = all(self._slots(u) for u in urls)
        if slotted:  # llama.cpp: where a slot holds the prefix, or the slot worth least (`admit` decides)
            home = self._slot_for(urls, key, home, True)[0]
        rest = sorted((i for i in range(len(urls)) if i != home), key=lambda i: loads[i])
        bound = math.ceil(self.load_factor * (sum(loads) + 1) / len(urls))
        if known and not slotted and loads[home] >= bound:  # past its share: the least loaded goes first
            return [targets[i] for i in rest[:1]] + [targets[home]] + [targets[i] for i in rest[1:]]
        return [targets[home]] + [targets[i] for i in rest]

    def _first(self, urls: Sequence[str], loads: list[int]) -> int:
        """Where a key seen for the first time goes: it is cached nowhere and may never come back (prompts
        that share nothing), so by load alone, ties in turn, as `least_load` places it."""
        turn = self.turns.get(tuple(urls), 0)
        self.turns[tuple(urls)] = (turn + 1) % len(urls)
        return min(range(len(urls)), key=lambda i: (loads[i], (i - turn) % len(urls)))

    def _slot_for(self, urls: Sequence[str], key: int, home: int, patient: bool) -> tuple[int, str | None]:
        """On llama.cpp replicas: where the request goes, and why it should wait first, if it should
        ("turn": for the busy slot holding its prefix; "full": no slot it may take).

        Where an idle slot holds its prefix (home first): a hit. Where a busy one does: wait for it
        (``patient``). Else it misses wherever it goes, so it takes the idle slot whose prefix is worth least:
        an empty slot, then a prefix also held elsewhere, then (the least loaded replica first) the prefix
        used longest ago, never one a waiting request wants; with none to take, it waits for one."""
        live = {
            i: state
            for i, url in enumerate(urls)
            if url not in self.unhealthy and (state := self._slots(url)) is not None
        }
        for idle in (True, False) if patient else (True,):
            holding = [i for i, state in live.items() if state.holds(key, idle)]
            if holding:
                return (home if home in holding else holding[0]), None if idle else "turn"
        victims: dict[int, int] = {}  # replica -> the slot a miss would take there
        for i, state in live.items():
            slot = state.victim()
            prefix = None if slot is None else state.keys[slot]
            if slot is not None and (prefix is None or not self.waiters.get(prefix)):
                victims[i] = slot
        if not victims:
            return home, "full"

        def cost(i: int) -> tuple[int, int, int, bool]:
            state, slot = live[i], victims[i]
            prefix = state.keys[slot]
            if prefix is None:
                kind = 0  # an empty slot
            elif any(other.holds(prefix, False) for j, other in live.items() if j != i):
                kind = 1  # a copy: still held elsewhere
            else:
                kind = 2
            return kind, self.load(urls[i]), state.used[slot], i != home

        return min(victims, key=cost), None


def affinity_key(messages: object, system: object = None) -> bytes | None:
    """The leading content of a chat request: its system prompt (Anthropic's ``system`` field, or the leading
    system/developer messages), else its first message. Only bytes the gateway already holds; no tokenizer."""
    parts: list[str] = []
    if isinstance(system, str):
        parts.append(system)
    elif system is not None:
        parts.append(repr(system))
    if isinstance(messages, list):
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "developer"):
                break
            parts.append(_text(m.get("content")))
        if not parts and messages and isinstance(messages[0], dict):
            parts.append(_text(messages[0].get("content")))
    joined = "\x00".join(parts)
    return joined.encode("utf-8", "surrogatepass") if joined else None


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\x01".join(_text(c.get("text") if isinstance(c, dict) else c) for c in content)
    return "" if content is None else repr(content)

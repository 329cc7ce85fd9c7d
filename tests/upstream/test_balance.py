"""Spreading requests over replicas (pure): every policy uses every replica, prefix affinity keeps a key on
one replica while it has room and spills past the bound, and the order is the same in every process."""

from __future__ import annotations

import asyncio
import collections

from agentcloud.catalog import ApiFormat, Routing
from agentcloud.upstream.balance import Balancer, affinity_key
from agentcloud.upstream.target import Target

REPLICAS = [Target(f"r{i}", f"http://10.0.0.{i}:8000/v1", ApiFormat.OPENAI, "m", None) for i in range(3)]


def firsts(b: Balancer, policy: Routing, keys: list[bytes | None]) -> collections.Counter[str]:
    return collections.Counter(b.order(REPLICAS, policy, k)[0].name for k in keys)


def test_round_robin_and_least_load_use_every_replica() -> None:
    assert firsts(Balancer(), Routing.ROUND_ROBIN, [None] * 9) == {"r0": 3, "r1": 3, "r2": 3}
    assert firsts(Balancer(), Routing.LEAST_LOAD, [None] * 9) == {"r0": 3, "r1": 3, "r2": 3}  # idle: in turn
    b = Balancer()
    b.acquire(REPLICAS[0])
    b.acquire(REPLICAS[0])
    b.acquire(REPLICAS[1])
    assert b.order(REPLICAS, Routing.LEAST_LOAD)[0] is REPLICAS[2]
    b.waiting[REPLICAS[2].base_url] = 5  # the engine's own queue counts too
    assert b.order(REPLICAS, Routing.LEAST_LOAD)[0] is REPLICAS[1]


def test_prefix_affinity_is_sticky_spread_and_the_same_everywhere() -> None:
    tenants = [f"system prompt of tenant {t} ".encode() * 40 for t in range(24)]
    a, b = Balancer(), Balancer()  # two gateway processes share nothing
    for _ in range(2):  # first sight places a key by load; the second makes it recurring, and evens them out
        for t in tenants:
            a.order(REPLICAS, Routing.PREFIX_AWARE, t)
            b.order(REPLICAS, Routing.PREFIX_AWARE, t)
    homes = {t: a.order(REPLICAS, Routing.PREFIX_AWARE, t)[0].name for t in tenants}
    assert all(b.order(REPLICAS, Routing.PREFIX_AWARE, t)[0].name == homes[t] for t in tenants)
    for _ in range(3):
        assert all(a.order(REPLICAS, Routing.PREFIX_AWARE, t)[0].name == homes[t] for t in tenants)  # sticky
    assert sorted(collections.Counter(homes.values()).values()) == [8, 8, 8]  # 24 tenants, evenly


def test_recurring_keys_even_out_over_replicas() -> None:
    b = Balancer()
    b.acquire(REPLICAS[1])
    b.acquire(REPLICAS[2])  # replica 0 looks idle: first come, every new key would land there
    tenants = [f"tenant {t}".encode() for t in range(8)]
    for _ in range(3):
        for t in tenants:
            b.order(REPLICAS, Routing.PREFIX_AWARE, t)
    homes = collections.Counter(b.order(REPLICAS, Routing.PREFIX_AWARE, t)[0].name for t in tenants)
    assert sorted(homes.values()) == [2, 3, 3], homes


def test_a_hot_prefix_spills_past_its_bound_and_comes_back() -> None:
    b = Balancer()
    hot = b"the same long system prompt " * 50
    home = b.order(REPLICAS, Routing.PREFIX_AWARE, hot)[0]
    placed = []
    for _ in range(6):  # six concurrent requests of one tenant
        target = b.order(REPLICAS, Routing.PREFIX_AWARE, hot)[0]
        b.acquire(target)
        placed.append(target)
    counts = collections.Counter(t.name for t in placed)
    assert counts[home.name] < 6 and max(counts.values()) <= 4, counts  # bound: ceil(2 * 6 / 3) = 4
    for t in placed:
        b.release(t)
    assert b.in_flight == {} and b.order(REPLICAS, Routing.PREFIX_AWARE, hot)[0] is home


def test_unhealthy_replicas_go_last_and_single_targets_pass_through() -> None:
    b = Balancer()
    b.unhealthy.add(REPLICAS[0].base_url)
    for policy in Routing:
        assert [b.order(REPLICAS, policy, b"k")[-1] for _ in range(3)] == [REPLICAS[0]] * 3
    assert b.order(REPLICAS[:1], Routing.PREFIX_AWARE, b"k") == REPLICAS[:1]


def test_affinity_key_is_the_leading_content() -> None:
    sys_a = [{"role": "system", "content": "A"}, {"role": "user", "content": "q1"}]
    sys_a2 = [{"role": "system", "content": "A"}, {"role": "user", "content": "q2"}]
    assert affinity_key(sys_a) == affinity_key(sys_a2) == b"A"
    assert (
        affinity_key([{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"}])
        == b"first"
    )
    parts = [{"role": "system", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}]
    assert affinity_key(parts) == b"A\x01B"
    assert affinity_key([{"role": "user", "content": "q"}], system="S") == b"S"
    assert affinity_key([]) is None and affinity_key(None) is None


def test_a_new_key_goes_to_the_least_loaded_replica_then_stays() -> None:
    b = Balancer()
    b.acquire(REPLICAS[0])
    b.acquire(REPLICAS[0])
    b.acquire(REPLICAS[2])
    assert b.order(REPLICAS, Routing.PREFIX_AWARE, b"new tenant")[0] is REPLICAS[1]  # cached nowhere yet
    b.acquire(REPLICAS[1])
    b.acquire(REPLICAS[1])
    assert b.order(REPLICAS, Routing.PREFIX_AWARE, b"new tenant")[0] is REPLICAS[1]  # home, within its share


def test_a_second_request_of_a_key_waits_its_turn_at_home() -> None:
    async def scenario() -> list[str]:
        b = Balancer()
        home, key = REPLICAS[0], 12345
        events: list[str] = []
        b.acquire(home, key)  # one request of the key in flight at home

        async def held() -> None:
            await b.turn(home, key, hold_s=5)
            events.append("held request goes")

        task = asyncio.create_task(held())
        await asyncio.sleep(0.05)
        assert b.in_flight[home.base_url] == 2, "a held request counts as load where it waits"
        await b.turn(home, key, hold_s=5)  # a third does not wait: one held request per key
        events.append("third goes at once")
        b.release(home, key)
        await asyncio.wait_for(task, 1)
        await b.turn(home, key, hold_s=5)  # nothing in flight: no wait
        started = asyncio.get_running_loop().time()
        b.acquire(home, key)
        await b.turn(home, key, hold_s=0.1)  # bounded
        assert asyncio.get_running_loop().time() - started < 1
        assert b.in_flight == {home.base_url: 1}
        return events

    assert asyncio.run(scenario()) == ["third goes at once", "held request goes"]


def test_with_slots_known_a_request_meets_its_prefix_or_a_free_slot_not_a_queue() -> None:
    """llama.cpp replicas of 2 slots: a key whose prefix a replica's free slot holds goes there; a known key
    whose prefix its home's slots no longer hold, while they are all busy, goes to a replica with a free slot
    instead of queueing (it misses either way); without slot counts (vLLM, or not probed yet) it goes home."""
    from agentcloud.upstream.balance import point

    def known_key_evicted_at_a_full_home(b: Balancer) -> tuple[bytes, Target]:
        key = b"tenant system prompt"
        home = b.order(REPLICAS, Routing.PREFIX_AWARE, key)[0]
        b.acquire(home, point(key))
        b.release(home, point(key))
        b.acquire(home, 1)  # two other keys take home's two slots, and stay in flight
        b.acquire(home, 2)
        for other in (t for t in REPLICAS if t is not home):  # one each elsewhere: home is within its bound
            b.acquire(other, 3)
        return key, home

    def without_slots_goes_home(key: bytes, home: Target) -> bool:  # the same, no slot counts (vLLM)
        without = Balancer()
        assert known_key_evicted_at_a_full_home(without) == (key, home)
        return without.order(REPLICAS, Routing.PREFIX_AWARE, key)[0] is home

    b = Balancer()
    b.slots = {t.base_url: 2 for t in REPLICAS}
    key, home = known_key_evicted_at_a_full_home(b)
    assert set(b.slot_state[home.base_url].keys) == {1, 2}  # the key's prefix was pushed out of home's slots
    assert without_slots_goes_home(key, home)
    spilled = b.order(REPLICAS, Routing.PREFIX_AWARE, key)[0]
    assert spilled is not home
    b.acquire(spilled, point(key))
    b.release(spilled, point(key))
    assert b.order(REPLICAS, Routing.PREFIX_AWARE, key)[0] is spilled  # its free slot holds the key: a hit
    b.release(home, 1)
    assert b.order(REPLICAS, Routing.PREFIX_AWARE, key)[0] is spilled  # still: home would miss


def llama_replicas(busy: dict[int, list[int]]) -> Balancer:
    """A balancer over 2-slot llama.cpp replicas with these keys in flight (replica index -> keys)."""
    b = Balancer()
    b.slots = {t.base_url: 2 for t in REPLICAS}
    for i, keys in busy.items():
        for key in keys:
            b.acquire(REPLICAS[i], key)
    return b


def test_a_request_waits_for_the_busy_slot_holding_its_prefix_and_no_miss_takes_that_slot() -> None:
    """Every slot busy; a miss waits for a slot it may take, a request whose prefix is in flight waits for
    that slot; when that slot frees, the miss (waiting longer) must not take it: it waits on for the next."""

    async def scenario() -> list[tuple[int, str]]:
        b = llama_replicas({0: [11, 22], 1: [1, 2], 2: [3, 4]})
        went: list[tuple[int, str]] = []

        async def request(key: int) -> None:
            target = (await b.admit(REPLICAS, key, hold_s=5))[0]
            b.acquire(target, key)
            went.append((key, target.name))

        miss = asyncio.create_task(request(33))
        await asyncio.sleep(0.01)
        hit = asyncio.create_task(request(11))
        await asyncio.sleep(0.01)
        assert went == []  # both wait
        b.release(REPLICAS[0], 11)
        await asyncio.wait_for(hit, 1)
        assert went == [(11, "r0")] and not miss.done()  # the freed slot held 11's prefix: 11 took it
        b.release(REPLICAS[2], 3)
        await asyncio.wait_for(miss, 1)
        assert b.waiters == {}  # nobody left waiting, nothing kept
        return went

    assert asyncio.run(scenario()) == [(11, "r0"), (33, "r2")]


def test_past_its_hold_a_request_takes_a_free_slot_elsewhere() -> None:
    async def scenario() -> tuple[str, str, str]:
        b = llama_replicas({0: [11, 22], 1: [1]})
        loop = asyncio.get_running_loop()
        started = loop.time()
        patient = (await b.admit(REPLICAS, 11, hold_s=0.05))[0].name  # 11's slot stays busy: a copy elsewhere
        waited = loop.time() - started
        assert 0.04 <= waited < 1
        at_once = (await b.admit(REPLICAS, 11, hold_s=0))[0].name
        b.acquire(REPLICAS[2], 5)
        b.acquire(REPLICAS[2], 6)
        b.acquire(REPLICAS[1], 2)
        full = (await b.admit(REPLICAS, 99, hold_s=0.01))[0].name  # nothing free: the first target's queue
        assert b.waiters == {}
        return patient, at_once, full

    assert asyncio.run(scenario()) == ("r2", "r2", "r0")  # r2's slots are empty, r1's hold key 1


def test_a_hot_key_on_slots_spreads_as_copies_instead_of_piling_on_one_replica() -> None:
    """One tenant sends 6 requests at once to 3 replicas of 2 slots: the first takes a slot, the rest wait
    for it up to the hold, then make copies of the prefix in free slots elsewhere; no replica is sent more
    requests than it has slots, and later requests find an idle copy (a hit) on any replica."""

    async def scenario() -> tuple[dict[str, int], set[str]]:
        b = llama_replicas({})
        key = 7
        most: dict[str, int] = {}

        async def request() -> None:
            target = (await b.admit(REPLICAS, key, hold_s=0.05))[0]
            b.acquire(target, key)
            most[target.name] = max(most.get(target.name, 0), b.in_flight[target.base_url])
            await asyncio.sleep(0.2)
            b.release(target, key)

        await asyncio.gather(*(request() for _ in range(6)))
        holding = {t.name for t in REPLICAS if b.slot_state[t.base_url].holds(key, idle=True)}
        return most, holding

    most, holding = asyncio.run(scenario())
    assert set(most) == {"r0", "r1", "r2"} and max(most.values()) <= 2, most
    assert holding == {"r0", "r1", "r2"}


def test_a_miss_cancelled_after_its_wake_passes_the_wake_on() -> None:
    """A request's end wakes one waiting miss; if that one's client has gone away before it could look, the
    next miss waiting is woken instead of the freed slot idling until another request ends."""

    async def scenario() -> str:
        b = llama_replicas({0: [1, 2], 1: [3, 4], 2: [5, 6]})
        first = asyncio.create_task(b.admit(REPLICAS, 98, hold_s=5))
        second = asyncio.create_task(b.admit(REPLICAS, 99, hold_s=5))
        await asyncio.sleep(0.01)
        b.release(REPLICAS[1], 3)  # wakes the first miss...
        first.cancel()  # ...whose client goes away before it runs
        order = await asyncio.wait_for(second, 1)
        assert b.waiters == {}
        return order[0].name

    assert asyncio.run(scenario()) == "r1"

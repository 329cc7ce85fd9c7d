"""The gateway in front of a real llama.cpp server (built by scripts/build-llama-server.sh) serving a tiny
GGUF that the tests generate: chat, streaming, the Anthropic translation, and the engine's API key."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from agentcloud.catalog import ApiFormat, Catalog
from agentcloud.gateway.routing import RouteTable
from agentcloud.store import Store
from agentcloud.tiny_gguf import write_tiny_gguf
from agentcloud.upstream.engine import EngineState
from agentcloud.upstream.target import Target
from tests.gateway.conftest import assert_counters_released
from tests.gateway.harness import Keys, Running, make_gateway, running, target, wait_for
from tests.sshd import free_port

LLAMA_VERSION = os.environ.get("LLAMA_CPP_PYTHON_VERSION", "0.3.36")
CACHE = Path(os.environ.get("AGENTCLOUD_CACHE", Path.home() / ".cache" / "agentcloud"))
LLAMA_SERVER = Path(
    os.environ.get(
        "AGENTCLOUD_LLAMA_SERVER", CACHE / f"llama-server-{LLAMA_VERSION}" / "bin" / "llama-server"
    )
)
ENGINE_KEY = "engine-key-for-tests"
MODEL = "tiny-llama"


def start_llama_server(
    gguf: Path, api_key: str = ENGINE_KEY, alias: str = MODEL, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    if not LLAMA_SERVER.exists():
        pytest.skip(
            f"llama-server not built at {LLAMA_SERVER}: run scripts/build-llama-server.sh (setup does it)"
        )
    port = free_port()
    proc = subprocess.Popen(
        [
            str(LLAMA_SERVER),
            "-m",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            "1024",
            "-np",
            "2",
            "--jinja",
            "--metrics",
            "--alias",
            alias,
            "--api-key",
            api_key,
            "-t",
            "1",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, f"{base}/v1"
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("llama-server did not become healthy")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    gguf = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    proc, base_url = start_llama_server(gguf)
    try:
        yield base_url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.fixture
def llama_gw(catalog: Catalog, store: Store, keys: Keys, llama: str) -> Iterator[Running]:
    table = RouteTable()
    t = target(llama, name="llama.cpp", upstream_model=MODEL)
    table.models[MODEL] = [t.__class__(**{**t.__dict__, "api_key": ENGINE_KEY})]
    table.models["tiny-wrong-key"] = [t]  # harness targets carry a different key
    with running(make_gateway(catalog, store, table)) as r:
        yield r
    assert_counters_released(r)


def test_chat_and_stream_through_llamacpp(llama_gw: Running, keys: Keys) -> None:
    client = llama_gw.openai(keys.admin, timeout=60)
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0
    )
    assert isinstance(resp.choices[0].message.content, str) and resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 8 and resp.usage.prompt_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=6,
            stream=True,
            temperature=0,
        )
    )
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 1
    assert all(c.usage is None for c in chunks)  # not asked for: metered, not sent
    asked = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=6,
            stream=True,
            temperature=0,
            stream_options={"include_usage": True},
        )
    )
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 6
    series = llama_gw.gateway.metrics.models[MODEL]
    assert wait_for(lambda: series.completion_tokens >= 20) and series.ttft.count >= 1


def test_anthropic_sdk_through_llamacpp(llama_gw: Running, keys: Keys) -> None:
    client = llama_gw.anthropic(keys.admin)
    # Greedy decoding: the random tiny model would otherwise sometimes sample its end token early.
    greedy = {"temperature": 0}
    msg = client.messages.create(
        model=MODEL,
        max_tokens=5,
        system="be brief",
        messages=[{"role": "user", "content": "hi"}],
        extra_body=greedy,
    )
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 5
    with client.messages.stream(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}], extra_body=greedy
    ) as s:
        final = s.get_final_message()
    assert final.stop_reason == "max_tokens" and final.content and final.content[0].type == "text"


def test_engine_rejecting_the_gateway_key_is_a_502(llama_gw: Running, keys: Keys) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        llama_gw.openai(keys.admin).chat.completions.create(
            model="tiny-wrong-key", messages=[{"role": "user", "content": "x"}], max_tokens=2
        )
    assert err.value.status_code == 502 and "rejected the gateway's credentials" in err.value.message


def test_the_probe_reads_a_real_llama_server_s_queue_and_slots(llama: str) -> None:
    """What the routing's slot model and the autoscaler read from llama.cpp itself: healthy, its queue, and
    its slot count from /props (asked only when wanted)."""
    import asyncio

    from agentcloud.upstream.engine import probe
    from agentcloud.upstream.http_client import HttpPool

    async def both() -> tuple[object, object]:
        pool = HttpPool(connect_timeout_s=2)
        try:
            return (
                await probe(pool, llama, ENGINE_KEY, with_slots=True),
                await probe(pool, llama, ENGINE_KEY),
            )
        finally:
            pool.close()

    with_slots, plain = asyncio.run(both())
    assert with_slots == EngineState(True, 0, 0, 2)  # -np 2
    assert plain == EngineState(True, 0, 0, None)


def test_the_slot_model_predicts_a_real_llama_server_s_prefix_hits(tmp_path: Path) -> None:
    """The balancer's model of llama.cpp's slots (which prefix each holds, busy or idle, least recently
    used) against the engine itself: before each request the model says hit or miss, and llama.cpp's own
    `cache_n` says what happened. 2 slots, the host-memory prompt cache off, so only slots hold prefixes."""
    import threading

    from agentcloud.upstream.balance import Balancer

    proc, base_url = start_llama_server(
        write_tiny_gguf(tmp_path / "tiny.gguf"), extra=("--cache-ram", "0", "-c", "4096")
    )
    prompts = {k: " ".join(f"{k}{i}" for i in range(25)) for k in (1, 2, 3)}  # ~150 tokens each
    balancer = Balancer()
    balancer.slots = {base_url: 2}
    engine = target(base_url, name="llama.cpp", upstream_model=MODEL)
    seen: list[tuple[int, bool, bool]] = []

    def send(key: int, max_tokens: int = 2, started: threading.Event | None = None) -> None:
        state = balancer._slots(base_url)
        assert state is not None
        predicted = state.holds(key, idle=True)
        balancer.acquire(engine, key)
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "system", "content": prompts[key]}, {"role": "user", "content": "q"}],
            "max_tokens": max_tokens,
            "ignore_eos": True,  # llama.cpp's own option: exactly max_tokens, so the long ones stay busy
            "stream": started is not None,
        }
        headers = {"Authorization": f"Bearer {ENGINE_KEY}"}
        with requests.post(
            f"{base_url}/chat/completions", json=body, headers=headers, timeout=60, stream=True
        ) as resp:
            assert resp.status_code == 200, resp.text
            if started is None:
                cached = resp.json()["timings"]["cache_n"]
            else:
                cached = -1
                for line in resp.iter_lines():
                    started.set()
                    if b'"timings"' in line:
                        cached = json.loads(line[5:])["timings"]["cache_n"]
        balancer.release(engine, key)
        seen.append((key, predicted, cached > 100))

    try:
        for key in (1, 2, 1, 3, 2, 1, 1):  # empty slots, a hit, then least recently used evictions
            send(key)
        # both slots busy (key 1 a hit, key 3 evicting key 2), then key 2 waits in the engine's queue and
        # takes the first slot to free: key 3's, the shorter
        first, second = threading.Event(), threading.Event()
        long = [
            threading.Thread(target=send, args=(k, n, e)) for k, n, e in ((1, 1500, first), (3, 200, second))
        ]
        long[0].start()
        assert first.wait(30)
        long[1].start()
        assert second.wait(30)
        send(2)
        for thread in long:
            thread.join(60)
        send(3)
        send(1)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert [s[2] for s in seen] == [s[1] for s in seen], seen  # the model predicted every hit and miss
    assert [s[0] for s in seen] == [1, 2, 1, 3, 2, 1, 1, 3, 2, 1, 3, 1], f"{seen}"
    assert [s[2] for s in seen] == [
        *(False, False, True, False, False, False, True),
        False,  # 3, evicting 2
        False,  # 2, queued, then in 3's slot
        True,  # 1, the long one
        False,  # 3: evicted by 2
        True,  # 1
    ], f"{seen}"


def test_prefix_aware_requests_meet_their_prefix_on_real_llama_servers(
    tmp_path: Path, catalog: Catalog, store: Store, keys: Keys
) -> None:
    """The whole path on two real llama-servers of 2 slots (host prompt cache off): the gateway's probe reads
    their slot counts, 4 tenants take the 4 slots, and then two concurrent requests of each tenant both meet
    its prefix (llama.cpp's own `cache_n`): the second waits in the gateway for the first's slot instead of
    taking another tenant's."""
    import concurrent.futures

    from agentcloud.catalog import Routing

    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    servers = [start_llama_server(gguf, extra=("--cache-ram", "0", "-c", "4096")) for _ in range(2)]
    try:
        table = RouteTable()
        table.models[MODEL] = [
            Target(f"llama#{i}", url, ApiFormat.OPENAI, MODEL, ENGINE_KEY)
            for i, (_, url) in enumerate(servers)
        ]
        table.policies[MODEL] = (Routing.PREFIX_AWARE, 2)
        tenants = [" ".join(f"t{t}w{i}" for i in range(25)) for t in range(4)]

        with running(make_gateway(catalog, store, table, probe_interval_s=0.2, routing_hold_s=5)) as r:
            assert wait_for(lambda: len(r.gateway.data.upstreams.balancer.slots) == 2, 10)

            def cached(tenant: int, max_tokens: int = 2) -> int:
                body: dict[str, Any] = {
                    "model": MODEL,
                    "messages": [
                        {"role": "system", "content": tenants[tenant]},
                        {"role": "user", "content": "q"},
                    ],
                    "max_tokens": max_tokens,
                    "logit_bias": {"2": -100},  # never </s>: the pair's requests overlap
                }
                resp = requests.post(
                    f"{r.url}/v1/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {keys.admin}"},
                    timeout=60,
                )
                assert resp.status_code == 200, resp.text
                return int(resp.json()["timings"]["cache_n"])

            first = [cached(t) for t in range(4)]
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                pairs = [list(pool.map(lambda t: cached(t, 40), [t, t])) for t in range(4)]
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(timeout=15)
    assert all(c < 50 for c in first), first  # cold
    assert all(c > 100 for pair in pairs for c in pair), pairs  # every one met its tenant's prefix

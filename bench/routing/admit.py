"""CPU per request of the balancer's slot model and admission (`Balancer.admit`) as concurrency grows, with no
network: C clients send requests of 50 keys to 3 llama.cpp replicas of 4 slots (12 slots in all), each request
holds its slot for 2 ms. Past 12 clients requests wait in the gateway for a slot; what a request's end costs
must not grow with the number waiting.

    .venv/bin/python bench/routing/admit.py
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

from agentcloud.catalog import ApiFormat
from agentcloud.upstream.balance import Balancer
from agentcloud.upstream.target import Target

REPLICAS = [Target(f"r{i}", f"http://10.0.0.{i}:8000/v1", ApiFormat.OPENAI, "m", None) for i in range(3)]


async def run(clients: int, requests: int = 3000) -> tuple[float, float]:
    balancer = Balancer()
    balancer.slots = {t.base_url: 4 for t in REPLICAS}
    rng = random.Random(1)
    done = 0

    async def client() -> None:
        nonlocal done
        while done < requests:
            key = rng.randrange(50)
            target = (await balancer.admit(REPLICAS, key, hold_s=0.5))[0]
            balancer.acquire(target, key)
            await asyncio.sleep(0.002)
            balancer.release(target, key)
            done += 1

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return (time.process_time() - cpu) / done * 1000, done / (time.perf_counter() - wall)


def main() -> int:
    print("| clients | CPU ms per request | requests/s |\n|---|---|---|")
    for clients in (4, 12, 50, 200, 1000):
        cpu_ms, rate = asyncio.run(run(clients))
        print(f"| {clients} | {cpu_ms:.3f} | {rate:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Routing benchmark: a multi-tenant shared-prefix workload and one without shared prefixes, over R llama.cpp
replicas, through each of the gateway's routing policies and, in the same run, sglang-router (cache_aware and
round_robin), the open-source router users would pick instead.

    .venv/bin/python bench/routing/run.py                 # ~4 minutes on 2 cores
    .venv/bin/python bench/routing/run.py --requests 96 --repeat 3   # medians of three, ~11 minutes
    .venv/bin/python bench/routing/run.py --quick         # a smoke run (~1 minute)

Setup (docs/routing.md says why): a generated GGUF with random weights sized so that a ~1,500-token prefill
takes about 350 ms on one thread; each replica is `llama-server -t 1 -np SLOTS --cache-ram 0`, so only what
stays resident in a replica's slots can be reused (as with vLLM's prefix cache in GPU memory). Replicas are
restarted before each target, so every target starts cold. Reported per target: TTFT p50/p99 and end-to-end
p50 (ms, streamed), requests/s, the share of prompt tokens served from cache (llama.cpp's own counters), and
the router's CPU per request (ms, from /proc). Results: bench/results/<stamp>-routing/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
CACHE = Path(os.environ.get("AGENTCLOUD_CACHE", Path.home() / ".cache" / "agentcloud"))
LLAMA_SERVER = Path(os.environ.get("LLAMA_SERVER", CACHE / "llama-server-0.3.36" / "bin" / "llama-server"))
ROUTER_VENV = Path(os.environ.get("ROUTER_VENV", CACHE / "router-venv"))
ROUTER_VERSION = "0.3.2"
MODEL = "bench"
WORDS = "hello world the a of and to in is it you that he was for on are with as I his they be at one".split()


@dataclass
class Result:
    workload: str
    slots: int
    target: str
    requests: int
    errors: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    e2e_p50_ms: float
    requests_per_s: float
    cache_hit_share: float
    router_cpu_ms_per_request: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout_s} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children that have exited."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def text(rng: random.Random, tokens: int) -> str:
    """About ``tokens`` tokens of the generated model's vocabulary. Its tokenizer (SentencePiece with byte
    fallback) has no piece for a word or for the space marker, so each character is a token and each space
    three (the UTF-8 bytes of the space marker)."""
    out: list[str] = []
    count = 0
    while count < tokens:
        word = (
            rng.choice(WORDS)
            if rng.random() < 0.3
            else "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=5))
        )
        out.append(word)
        count += len(word) + 3
    return " ".join(out)


def workload(
    kind: str, n: int, tenants: int, prefix_tokens: int, seed: int, warmup: bool = False
) -> list[list[dict[str, str]]]:
    """``n`` requests: each tenant's system prompt (shared_prefix; tenants picked at random) or a prompt of
    its own (no_shared_prefix), and a short user turn. The warm-up of a seed has its tenants in turn, each
    once per round, with other user turns."""
    rng = random.Random(seed)
    prompts = [text(rng, prefix_tokens) for _ in range(tenants)]
    if warmup:
        rng = random.Random(seed + 1000)
    out = []
    for i in range(n):
        if kind != "shared_prefix":
            system = text(rng, prefix_tokens)
        else:
            system = prompts[i % tenants] if warmup else prompts[rng.randrange(tenants)]
        out.append(
            [
                {"role": "system", "content": system},
                {"role": "user", "content": f"question {i}: {text(rng, 24)}"},
            ]
        )
    return out


class Replicas:
    def __init__(self, model: Path, count: int, slots: int, work: Path) -> None:
        self.model, self.count, self.slots, self.work = model, count, slots, work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []

    def start(self) -> None:
        for i in range(self.count):
            port = free_port()
            log = (self.work / f"replica-{i}.log").open("ab")
            cmd = [
                str(LLAMA_SERVER),
                "-m",
                str(self.model),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "-t",
                "1",
                "-np",
                str(self.slots),
                "-c",
                str(2048 * self.slots),
                "--cache-ram",
                "0",
                "--metrics",
                "-a",
                MODEL,
            ]
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
            self.urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(self.urls, self.procs, strict=True):
            wait_http(f"{url}/health", proc)

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc)
        self.procs, self.urls = [], []

    def counters(self) -> tuple[float, float]:
        """(prompt tokens processed, prompt tokens reused from cache), summed over replicas."""
        import urllib.request

        processed = cached = 0.0
        for url in self.urls:
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("llamacpp:prompt_tokens_total "):
                        processed += float(line.split()[1])
                    elif line.startswith("llamacpp:prompt_tokens_cached_total "):
                        cached += float(line.split()[1])
        return processed, cached


def start_gateway(policy: str, urls: list[str], work: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    env = {
        **os.environ,
        "AGENTCLOUD_DATABASE": str(work / "gateway.sqlite3"),
        "AGENTCLOUD_KEY_PEPPER": "bench",
        "AGENTCLOUD_UPLOAD_DIR": str(work / "uploads"),
    }
    cli = [str(ROOT / ".venv" / "bin" / "agentcloud"), "gateway"]
    if not (work / "key").exists():
        subprocess.run(
            [*cli, "orgs", "create", "bench", "--id", "org_bench"], env=env, check=True, capture_output=True
        )
        out = subprocess.run(
            [
                *cli,
                "keys",
                "create",
                "--org",
                "org_bench",
                "--plan",
                "enterprise",
                "--rpm",
                "100000000",
                "--tpm",
                "2000000000",
                "--json",
            ],
            env=env,
            check=True,
            capture_output=True,
        ).stdout
        (work / "key").write_text(json.loads(out)["key"])
    routes = work / f"routes-{policy}.yaml"
    endpoints = "".join(f"\n      - {u}/v1" for u in urls)
    routes.write_text(f"models:\n  - model_id: {MODEL}\n    routing: {policy}\n    endpoints:{endpoints}\n")
    port = free_port()
    log = (work / f"gateway-{policy}.log").open("ab")
    proc = subprocess.Popen(
        [*cli, "serve", "--plane", "data", "--port", str(port), "--routes", str(routes)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", proc)
    return proc, url, (work / "key").read_text()


def start_sglang(policy: str, urls: list[str], work: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    log = (work / f"sglang-{policy}.log").open("ab")
    cmd = [
        str(ROUTER_VENV / "bin" / "python"),
        "-m",
        "sglang_router.launch_router",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--worker-urls",
        *urls,
        "--policy",
        policy,
        "--prometheus-port",
        str(free_port()),
        "--log-level",
        "warn",
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", proc, timeout_s=120)
    return proc, url, "none"


async def one(
    session: aiohttp.ClientSession, url: str, key: str, messages: list[dict[str, str]]
) -> tuple[float, float]:
    body = {"model": MODEL, "messages": messages, "max_tokens": 8, "stream": True, "temperature": 0}
    started = time.perf_counter()
    ttft = None
    async with session.post(
        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        async for line in resp.content:
            if ttft is None and line.startswith(b"data:") and b'"delta"' in line:
                ttft = time.perf_counter() - started
    end = time.perf_counter() - started
    return (ttft if ttft is not None else end), end


async def drive(
    url: str, key: str, requests: list[list[dict[str, str]]], clients: int
) -> tuple[list[tuple[float, float]], int, float]:
    queue: asyncio.Queue[list[dict[str, str]]] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    timings: list[tuple[float, float]] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=120)

    async def client() -> None:
        nonlocal errors
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not queue.empty():
                messages = queue.get_nowait()
                try:
                    timings.append(await one(session, url, key, messages))
                except (TimeoutError, aiohttp.ClientError, RuntimeError):
                    errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return timings, errors, time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def measure(
    name: str,
    start: Any,
    policy: str,
    replicas: Replicas,
    kind: str,
    slots: int,
    args: argparse.Namespace,
    work: Path,
) -> Result:
    replicas.start()
    proc, url, key = start(policy, replicas.urls, work)
    try:
        warm = workload(kind, args.warmup, args.tenants, args.prefix_tokens, seed=2, warmup=True)
        asyncio.run(drive(url, key, warm, args.clients))
        before_tokens = replicas.counters()
        before_cpu = cpu_s(proc.pid)
        reqs = workload(kind, args.requests, args.tenants, args.prefix_tokens, seed=2)
        timings, errors, wall = asyncio.run(drive(url, key, reqs, args.clients))
        cpu = cpu_s(proc.pid) - before_cpu
        after_tokens = replicas.counters()
    finally:
        stop(proc)
        replicas.stop()
    processed = after_tokens[0] - before_tokens[0]
    cached = after_tokens[1] - before_tokens[1]
    ttfts, e2es = [t[0] * 1000 for t in timings], [t[1] * 1000 for t in timings]
    result = Result(
        kind,
        slots,
        name,
        len(timings),
        errors,
        round(pct(ttfts, 0.5), 1),
        round(pct(ttfts, 0.99), 1),
        round(pct(e2es, 0.5), 1),
        round(len(timings) / wall, 2),
        round(cached / (cached + processed), 3) if cached + processed else 0.0,
        round(cpu * 1000 / max(1, len(timings)), 3),
    )
    print(json.dumps(asdict(result)), flush=True)
    return result


def medians(results: list[Result]) -> list[Result]:
    """One row per (workload, slots, target): each figure the median of its runs (``--repeat``)."""
    groups: dict[tuple[str, int, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.workload, r.slots, r.target), []).append(r)
    out = []
    for (kind, slots, target), runs in groups.items():
        figures = {
            name: sorted(getattr(r, name) for r in runs)[len(runs) // 2]
            for name in Result.__dataclass_fields__
            if name not in ("workload", "slots", "target")
        }
        out.append(Result(kind, slots, target, **figures))
    return out


def summary(results: list[Result]) -> str:
    lines = []
    for kind in ("shared_prefix", "no_shared_prefix"):
        for slots in sorted({r.slots for r in results}):
            rows = [r for r in results if r.workload == kind and r.slots == slots]
            if not rows:
                continue
            rr = next((r for r in rows if r.target == "gateway round_robin"), None)
            lines += [
                f"### {kind}, {slots} slots per replica",
                "",
                "| target | TTFT p50 | TTFT p99 | e2e p50 | req/s | cache hit | router CPU ms/req "
                "| TTFT p50 vs gateway round_robin | errors |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for r in rows:
                ratio = f"{r.ttft_p50_ms / rr.ttft_p50_ms:.2f}x" if rr and rr.ttft_p50_ms else "-"
                lines.append(
                    f"| {r.target} | {r.ttft_p50_ms:.0f} | {r.ttft_p99_ms:.0f} | {r.e2e_p50_ms:.0f} "
                    f"| {r.requests_per_s:.2f} | "
                    f"{r.cache_hit_share:.0%} | {r.router_cpu_ms_per_request:.2f} | {ratio} | {r.errors} |"
                )
            lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--slots", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--tenants", type=int, default=8)
    parser.add_argument("--prefix-tokens", type=int, default=1200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument(
        "--warmup", type=int, default=8, help="requests before measuring (shared_prefix: tenants in turn)"
    )
    parser.add_argument("--workloads", nargs="+", default=["shared_prefix", "no_shared_prefix"])
    parser.add_argument(
        "--targets",
        nargs="+",
        default=[
            "gateway prefix_aware",
            "gateway least_load",
            "gateway round_robin",
            "sglang cache_aware",
            "sglang round_robin",
        ],
    )
    parser.add_argument(
        "--layers", type=int, default=4, help="layers of the generated model: its prefill time (4: ~350 ms)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per target; the summary gives each figure's median"
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests, 2 slots only")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.slots = 24, [2]
    if not LLAMA_SERVER.exists():
        print(f"llama-server not found at {LLAMA_SERVER}: run scripts/build-llama-server.sh", file=sys.stderr)
        return 2
    if any(t.startswith("sglang") for t in args.targets) and not (ROUTER_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(ROUTER_VENV)], check=True)
        subprocess.run(
            [str(ROUTER_VENV / "bin" / "pip"), "install", "--quiet", f"sglang-router=={ROUTER_VERSION}"],
            check=True,
        )
    from agentcloud.tiny_gguf import write_tiny_gguf

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results" / f"{stamp}-routing"
    out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="agentcloud-routing-") as tmp:
        work = Path(tmp)
        model = write_tiny_gguf(
            work / "bench.gguf",
            n_embd=256,
            n_layers=args.layers,
            n_head=8,
            n_head_kv=4,
            context=8192,
            name=MODEL,
        )
        for kind in args.workloads:
            for slots in args.slots:
                replicas = Replicas(model, args.replicas, slots, work)
                for _ in range(args.repeat):  # rounds over every target: drift touches each alike
                    for target in args.targets:
                        side, policy = target.split()
                        start = start_gateway if side == "gateway" else start_sglang
                        results.append(measure(target, start, policy, replicas, kind, slots, args, work))
    (out / "results.jsonl").write_text("".join(json.dumps(asdict(r)) + "\n" for r in results))
    results = medians(results)
    meta = {
        "replicas": args.replicas,
        "tenants": args.tenants,
        "prefix_tokens": args.prefix_tokens,
        "clients": args.clients,
        "requests": args.requests,
        "warmup": args.warmup,
        "sglang_router": ROUTER_VERSION,
        "cpus": os.cpu_count(),
        "layers": args.layers,
        "repeat": args.repeat,
    }
    text_out = summary(results)
    (out / "summary.md").write_text(f"Setup: {json.dumps(meta)}\n\n{text_out}\n")
    print(text_out)
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

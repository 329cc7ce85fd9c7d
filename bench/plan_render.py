"""Benchmark: parse, validate, plan and render 1,000 generated deployments (target: under 2 s in total).

Each deployment goes the whole way a stack file does: YAML text -> document with line numbers -> validated
spec -> plan -> every rendered artefact. Combinations that cannot fit count too (they raise PlanError with
priced alternatives, which is the more expensive path). Usage: python bench/plan_render.py [--count N]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import yaml

from agentcloud.catalog import load_catalog
from agentcloud.document import parse_document
from agentcloud.errors import PlanError
from agentcloud.planner import plan
from agentcloud.render import render
from agentcloud.spec import parse_stack


def generate(count: int) -> list[str]:
    catalog = load_catalog()
    combos = [
        (model, gpu, preset, region)
        for model, gpu, preset in itertools.product(
            [m for m, spec in catalog.models.items() if spec.deployable], catalog.gpu_types, catalog.presets
        )
        for region in catalog.regions_offering(gpu)[:1]
    ]
    texts = []
    for i, (model, gpu, preset, region) in zip(range(count), itertools.cycle(combos), strict=False):
        body = {
            "config": {
                "agent-cloud:deployment": {
                    "name": f"bench-{i}",
                    "model_id": model,
                    "gpu_type": gpu,
                    "region": region,
                    "preset": preset,
                    "replicas": 1 + i % 3,
                    "scaling": {"min_replicas": 1, "max_replicas": 4},
                    "sla": {"ttft_target_ms": 500, "concurrency_limit": 50},
                    "ssh": {"allowed_cidrs": ["203.0.113.0/24"]},
                }
            }
        }
        texts.append(yaml.safe_dump(body, sort_keys=False))
    return texts


def run_once(texts: list[str]) -> tuple[float, int, int]:
    catalog = load_catalog()
    planned = refused = 0
    start = time.perf_counter()
    for i, text in enumerate(texts):
        spec = parse_stack(parse_document(text, f"Pulumi.bench-{i}.yaml"), catalog)
        try:
            render(plan(spec, catalog))
            planned += 1
        except PlanError:
            refused += 1
    return time.perf_counter() - start, planned, refused


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    texts = generate(args.count)
    run_once(texts[:50])  # warm caches: templates compiled, catalog loaded
    times = []
    for _ in range(args.reps):
        elapsed, planned, refused = run_once(texts)
        times.append(elapsed)
    print(
        f"{args.count} deployments ({planned} planned and rendered, {refused} refused with alternatives): "
        f"median {statistics.median(times):.3f} s, best {min(times):.3f} s over {args.reps} runs "
        f"({statistics.median(times) / args.count * 1000:.2f} ms each)"
    )


if __name__ == "__main__":
    main()

"""`agentcloud deployments ...`: the lifecycle from the command line, through the gateway's management API.

AGENTCLOUD_URL (default http://127.0.0.1:8080) and AGENTCLOUD_API_KEY (an admin key) say where and who.
Long operations print their progress (status changes and the stack operation's log) until they finish.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from agentcloud.cli.client import Client
from agentcloud.cli.output import status
from agentcloud.cli.output import table as print_table
from agentcloud.document import load_document
from agentcloud.records import Status
from agentcloud.spec import DEPLOYMENT_KEY, resolve_stack


def follow(client: Client, dep_id: str, timeout_s: float = 3600, interval_s: float = 2.0) -> dict[str, Any]:
    """Print status changes and new log lines until no job runs; returns the final deployment."""
    seen_status, seen_lines, seen_job = None, 0, None
    deadline = time.monotonic() + timeout_s
    while True:
        dep = client.call("GET", f"/{dep_id}")
        if dep["status"] != seen_status:
            seen_status = dep["status"]
            history = (dep.get("lifecycle") or {}).get("history") or [{}]
            why = (
                f" ({history[-1].get('reason')})"
                if seen_status == "degraded" and history[-1].get("reason")
                else ""
            )
            print(f"{time.strftime('%H:%M:%S')} {dep['name']}: {status(seen_status)}{why}", flush=True)
        job = dep.get("job")
        shown = job or dep.get("last_job") or {}  # a job that ended between two polls: its last lines too
        if shown.get("id") != seen_job:
            seen_job, seen_lines = shown.get("id"), 0
        lines = shown.get("log_tail") or []
        for line in lines[seen_lines:]:
            print(f"    {line.rstrip()}", flush=True)
        seen_lines = len(lines)
        if job is None or time.monotonic() > deadline:
            return dep
        time.sleep(interval_s)


def _stack_deployment(arg: str) -> dict[str, Any]:
    doc = load_document(resolve_stack(arg))
    return dict(doc.data["config"][DEPLOYMENT_KEY])


def run(args: argparse.Namespace) -> int:
    client = Client(args.url, args.key or "")
    if not args.key:
        print("error: set AGENTCLOUD_API_KEY (an admin key of your org) or pass --key", file=sys.stderr)
        return 2
    action = args.deployments_command
    if action == "list":
        rows = client.call("GET")["data"]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        table = [("ID", "NAME", "MODEL", "GPU", "REGION", "REPLICAS", "STATUS", "$/H", "COST TO DATE")]
        for d in rows:
            cost = d.get("cost") or {}
            table.append(
                (
                    d["id"],
                    d["name"],
                    d["model_id"],
                    d["gpu_type"] or "-",
                    d["region"] or "-",
                    f"{len(d.get('endpoints') or [])}/{d['replicas']}",
                    d["status"],
                    f"{cost.get('rate_usd_per_hour', 0):.2f}",
                    f"{cost.get('to_date_usd', 0):.2f}",
                )
            )
        print_table(table, colour_column=6)
        if len(table) == 1:
            print("(no deployments yet: agentcloud deployments create STACK)")
        return 0
    if action == "get":
        print(json.dumps(client.call("GET", f"/{args.id}"), indent=2))
        return 0
    if action == "upload":
        from agentcloud.cli.uploads import upload

        return upload(args, client)
    if action == "cost":
        c = client.call("GET", f"/{args.id}/cost", params={"window": args.window})
        if args.json:
            print(json.dumps(c, indent=2))
            return 0
        per_mtok = f"${c['usd_per_mtok']:.2f} per 1M tokens" if c["usd_per_mtok"] is not None else "no tokens"
        print(
            f"{c['deployment_id']}: ${c['cost_usd']:.2f} over {c['window']} "
            f"({c['tokens']:,} tokens, {per_mtok}); ${c['to_date_usd']:.2f} to date; "
            f"now ${c['rate_usd_per_hour']:.2f}/h"
        )
        if c["by_key"]:
            print(f"{'key':<20} {'tokens':>12} {'share':>7} {'cost':>10}")
            for key, k in c["by_key"].items():
                cost = f"${k['cost_usd']:.2f}"
                print(f"{key:<20} {k['tokens']:>12,} {k['share']:>7.1%} {cost:>10}")
        return 0
    if action == "create":
        dep = client.call("POST", json=_stack_deployment(args.stack))
        print(f"created {dep['id']} ({dep['name']})")
    elif action == "scale":
        body = {
            "min_replicas": args.min,
            "max_replicas": args.max,
            "scale_to_zero": args.scale_to_zero,
            "idle_timeout_seconds": args.idle_timeout,
        }
        dep = client.call("PATCH", f"/{args.id}/scaling", json=body)
    elif action == "sla":
        targets = {
            k: v
            for k, v in (
                ("ttft_target_ms", args.ttft_ms),
                ("throughput_target_tps", args.tps),
                ("concurrency_limit", args.concurrency),
            )
            if v is not None
        }
        out = (
            client.call("PATCH", f"/{args.id}/sla", json=targets)
            if targets
            else client.call("GET", f"/{args.id}/sla")
        )
        print(json.dumps(out, indent=2))
        return 0
    elif action == "teardown":
        flag = "false" if args.delete_model_cache else "true"
        dep = client.call("DELETE", f"/{args.id}?keep_model_cache={flag}")
    elif action == "up":
        dep = client.call("POST", f"/{args.id}/up")
    else:  # refresh
        dep = client.call("POST", f"/{args.id}/refresh")
    if args.no_wait:
        print(f"{dep['id']}: {dep['status']} (job {(dep.get('job') or {}).get('id')})")
        return 0
    final = follow(client, dep["id"])
    return 0 if final["status"] in (Status.ACTIVE, Status.INACTIVE) else 1


def add_parser(sub: Any) -> None:
    d = sub.add_parser("deployments", help="the deployment lifecycle through the gateway's management API")
    d.add_argument("--url", default=os.environ.get("AGENTCLOUD_URL", "http://127.0.0.1:8080"))
    d.add_argument("--key", default=os.environ.get("AGENTCLOUD_API_KEY"))
    d.add_argument("--no-wait", action="store_true", help="return once the operation is accepted")
    ds = d.add_subparsers(dest="deployments_command", required=True)
    ds.add_parser("list", help="a table (REPLICAS: running/declared)").add_argument(
        "--json", action="store_true", help="machine-readable output"
    )
    ds.add_parser("up", help="up again as declared: retry a failed create, recover from drift").add_argument(
        "id"
    )
    for name in ("get", "refresh"):
        ds.add_parser(name).add_argument("id")
    co = ds.add_parser("cost", help="capacity cost over a window, per 1M tokens, and by key")
    co.add_argument("id")
    co.add_argument("--window", default="24h", choices=["1h", "24h", "7d", "30d"])
    co.add_argument("--json", action="store_true", help="machine-readable output")
    from agentcloud.cli.uploads import add_arguments as upload_arguments

    upload_arguments(
        ds.add_parser("upload", help="upload a GGUF to a byom: deployment (resumable, progress)")
    )
    c = ds.add_parser("create", help="create from a stack file (its agent-cloud:deployment object)")
    c.add_argument("stack")
    s = ds.add_parser("scale")
    s.add_argument("id")
    s.add_argument("--min", type=int, required=True)
    s.add_argument("--max", type=int, required=True)
    s.add_argument("--scale-to-zero", action="store_true")
    s.add_argument("--idle-timeout", type=int, default=300)
    sl = ds.add_parser("sla", help="show, or set with the flags")
    sl.add_argument("id")
    sl.add_argument("--ttft-ms", type=int)
    sl.add_argument("--tps", type=float)
    sl.add_argument("--concurrency", type=int)
    t = ds.add_parser(
        "teardown", help="destroy the droplets (billing stops); the model cache is kept unless asked"
    )
    t.add_argument("id")
    t.add_argument("--delete-model-cache", action="store_true")
    d.set_defaults(func=run)

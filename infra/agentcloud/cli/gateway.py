"""`agentcloud gateway ...`: run the gateway locally and manage orgs, keys, members, grants and routes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from agentcloud.cli.output import table as print_table
from agentcloud.control.outputs import routes_from_outputs
from agentcloud.gateway.config import GatewayConfig
from agentcloud.records import DeploymentRecord, Status
from agentcloud.store import Store, StoreError
from agentcloud.store.keys import KINDS


def _config(args: argparse.Namespace) -> GatewayConfig:
    return GatewayConfig.from_env(
        database=args.database,
        redis_url=getattr(args, "redis", None),
        routes_file=getattr(args, "routes", None),
    )


def _store(args: argparse.Namespace) -> tuple[Store, GatewayConfig]:
    config = _config(args)
    return Store(config.database), config


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from agentcloud.catalog import load_catalog
    from agentcloud.compose import PLANES, build, routes_for
    from agentcloud.gateway.server import limits_of, serve

    config = _config(args)
    catalog = load_catalog(config.catalog)
    upstream_key = os.environ.get(args.upstream_key_env) if args.upstream_key_env else None
    routes = routes_for(config, catalog, args.upstream, args.model, upstream_key)
    planes = PLANES if args.plane == "both" else (args.plane,)
    gateway = build(config, planes, catalog=catalog, routes=routes)
    print(
        f"gateway ({args.plane} plane{'s' if args.plane == 'both' else ''}) on "
        f"http://{args.host}:{args.port} "
        f"(store: {config.database})",
        flush=True,
    )
    serve(gateway, args.host, args.port, limits_of(gateway.config))
    return 0


def cmd_metrics_token(args: argparse.Namespace) -> int:
    print(_config(args).metrics_token)
    return 0


def cmd_org_create(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    print(store.create_org(args.name, org_id=args.id))
    return 0


def cmd_key_create(args: argparse.Namespace) -> int:
    store, config = _store(args)
    from agentcloud.catalog import load_catalog

    plans = load_catalog(config.catalog).plans
    if args.plan not in plans:
        print(
            f"error: --plan {args.plan}: no such plan in the catalog; use one of: {', '.join(plans)}",
            file=sys.stderr,
        )
        return 2
    expires = time.time() + args.expires_days * 86400 if args.expires_days else None
    key_id, token = store.create_key(
        config.pepper, args.org, args.name, args.plan, args.kind, expires, args.rpm, args.tpm
    )
    out = {"id": key_id, "key": token, "org_id": args.org, "plan": args.plan, "kind": args.kind}
    if args.quiet:
        print(token)
    else:
        print(json.dumps(out) if args.json else f"{key_id}\n{token}\n(shown once: store it now)")
    return 0


def cmd_key_revoke(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    if not store.revoke_key(args.key_id):
        print(f"no key {args.key_id}")
        return 1
    print(f"revoked {args.key_id} (gateways drop it within their key-cache TTL)")
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    keys = store.list_keys(args.org)
    rows = [
        {
            "id": k.id,
            "prefix": k.prefix,
            "org_id": k.org_id,
            "plan": k.plan,
            "kind": k.kind,
            "state": "revoked" if k.revoked_at else "active",
            "name": k.name,
        }
        for k in keys
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from agentcloud.cli.output import table

    table(
        [("ID", "PREFIX", "ORG", "PLAN", "KIND", "STATE", "NAME")]
        + [
            (r["id"], f"{r['prefix']}...", r["org_id"], r["plan"], r["kind"], r["state"], r["name"])
            for r in rows
        ]
    )
    if not rows:
        print("(no keys: agentcloud gateway keys create --org ORG --plan PLAN)")
    return 0


def cmd_member_add(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    store.add_member(args.org, args.key_id, args.permission)
    print(f"{args.key_id} is a member of {args.org} with {', '.join(args.permission)}")
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    if args.revoke:
        ok = store.revoke_grant(args.deployment, args.key_id)
        print("revoked" if ok else "no such grant")
        return 0 if ok else 1
    store.grant(args.deployment, args.key_id)
    print(f"{args.key_id} may invoke {args.deployment}")
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    """`routes add|list|remove`: deployments registered by hand (engines the gateway does not manage)."""
    store, _ = _store(args)
    if args.action == "list":
        rows = [r for r in store.deployments() if not r.stack]
        if args.json:
            print(json.dumps([{"id": r.id, "org": r.org_id, "model": r.model_id, **r.routes} for r in rows]))
            return 0
        table = [("ID", "ORG", "MODEL", "ENDPOINTS")]
        table += [
            (r.id, r.org_id, r.model_id, ", ".join(r.routes.get("endpoints") or []) or "-") for r in rows
        ]
        print_table(table)
        return 0
    if not args.id:
        raise StoreError(f"routes {args.action} needs --id (the deployment id, e.g. dep_prod)")
    if args.action == "remove":
        record = store.deployment(args.id)
        if record is None:
            raise StoreError(f"no deployment {args.id!r}; `agentcloud gateway routes list` shows them")
        if record.stack:
            raise StoreError(
                f"{args.id} was made through the API (stack {record.stack}): tear it down with "
                f"`agentcloud deployments teardown {args.id}`"
            )
        store.delete_deployment(args.id)
        print(f"deployment {args.id} no longer routed")
        return 0
    missing = [
        flag
        for flag, value in (("--org", args.org), ("--model", args.model), ("--endpoint", args.endpoint))
        if not value
    ]
    if missing:
        raise StoreError(f"routes add needs {', '.join(missing)}")
    return cmd_route_add(args)


def cmd_route_add(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    routes: dict[str, Any] = {"endpoints": args.endpoint, "concurrency_limit": args.concurrency_limit}
    if args.api_key_env:
        routes["api_key_env"] = args.api_key_env
    store.save_deployment(
        DeploymentRecord(args.id, args.org, args.name or args.id, args.model, routes=routes)
    )
    print(f"deployment {args.id} ({args.model}) routes to {', '.join(args.endpoint)}")
    return 0


def cmd_route_from_stack(args: argparse.Namespace) -> int:
    from agentcloud import automation

    store, _ = _store(args)
    outputs = automation.outputs(args.stack)
    routes = routes_from_outputs(outputs, args.api_key_env)
    if not routes["model_id"]:
        print(
            f"stack {args.stack} has no plan output: is it a deployment stack that has been `pulumi up`-ed?"
        )
        return 1
    dep_id = args.id or f"dep_{args.stack.replace('-', '_')}"
    status = Status.ACTIVE if routes["endpoints"] else Status.INACTIVE
    store.save_deployment(
        DeploymentRecord(
            dep_id, args.org, args.stack, routes["model_id"], status, stack=args.stack, routes=routes
        )
    )
    print(
        f"deployment {dep_id} ({routes['model_id']}, {status}) routes to "
        f"{', '.join(routes['endpoints']) or 'nothing'}"
    )
    return 0


def add_parser(sub: Any) -> None:
    g = sub.add_parser("gateway", help="run the routing gateway locally; manage orgs, keys and grants")
    g.add_argument("--database", help="SQLite path or postgresql:// URL (default: ~/.local/share/agentcloud)")
    gs = g.add_subparsers(dest="gateway_command", required=True)

    s = gs.add_parser("serve", help="serve the gateway (uvicorn, uvloop, httptools)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--routes", help="routes file: dedicated deployments and extra upstreams")
    s.add_argument("--redis", help="redis:// URL for limits shared by several gateway processes")
    s.add_argument("--upstream", help="an OpenAI-compatible base URL (…/v1) to route --model names to")
    s.add_argument(
        "--model", action="append", default=[], help="model name served by --upstream (repeatable)"
    )
    s.add_argument("--upstream-key-env", help="environment variable holding --upstream's API key")
    s.add_argument(
        "--plane",
        choices=["both", "data", "control"],
        default="both",
        help="run the data plane (serving), the control plane (deployments), or both (default); "
        "processes share state through --database (and --redis)",
    )
    s.set_defaults(func=cmd_serve)

    mt = gs.add_parser("metrics-token", help="print the bearer token /metrics asks for (for Prometheus)")
    mt.set_defaults(func=cmd_metrics_token)

    o = gs.add_parser("orgs", help="organisations")
    o.add_argument("action", choices=["create"])
    o.add_argument("name")
    o.add_argument("--id", help="explicit org id (default: generated)")
    o.set_defaults(func=cmd_org_create)

    k = gs.add_parser("keys", help="API keys")
    ks = k.add_subparsers(dest="keys_command", required=True)
    kc = ks.add_parser("create", help="create a key (printed once)")
    kc.add_argument("--org", required=True)
    kc.add_argument("--plan", default="free")
    kc.add_argument("--kind", choices=KINDS, default="standard")
    kc.add_argument("--name", default="key")
    kc.add_argument("--expires-days", type=float)
    kc.add_argument("--rpm", type=int, help="requests/min override")
    kc.add_argument("--tpm", type=int, help="tokens/min override")
    kc.add_argument("--json", action="store_true")
    kc.add_argument("--quiet", action="store_true", help="print only the key (for scripts: KEY=$(...))")
    kc.set_defaults(func=cmd_key_create)
    kr = ks.add_parser("revoke")
    kr.add_argument("key_id")
    kr.set_defaults(func=cmd_key_revoke)
    kl = ks.add_parser("list")
    kl.add_argument("--org")
    kl.add_argument("--json", action="store_true", help="machine-readable output")
    kl.set_defaults(func=cmd_key_list)

    m = gs.add_parser("members", help="org membership of keys")
    m.add_argument("action", choices=["add"])
    m.add_argument("org")
    m.add_argument("key_id")
    m.add_argument("--permission", action="append", default=["deployment:invoke"])
    m.set_defaults(func=cmd_member_add)

    gr = gs.add_parser("grants", help="per-deployment grants for (scoped) keys")
    gr.add_argument("deployment")
    gr.add_argument("key_id")
    gr.add_argument("--revoke", action="store_true")
    gr.set_defaults(func=cmd_grant)

    fs = gs.add_parser(
        "routes-from-stack", help="register a deployment stack's engines (Automation API outputs)"
    )
    fs.add_argument("stack")
    fs.add_argument("--org", required=True)
    fs.add_argument("--id", help="deployment id (default: dep_<stack>)")
    fs.add_argument("--api-key-env", help="environment variable holding the engine's API key on the gateway")
    fs.set_defaults(func=cmd_route_from_stack)

    r = gs.add_parser("routes", help="deployments whose engines you run yourself: add, list, remove")
    r.add_argument("action", choices=["add", "list", "remove"])
    r.add_argument("--id", help="deployment id, e.g. dep_prod")
    r.add_argument("--org")
    r.add_argument("--model")
    r.add_argument("--name")
    r.add_argument("--endpoint", action="append", help="engine base URL, e.g. http://10.0.0.5:8000/v1")
    r.add_argument("--api-key-env", help="environment variable holding the engine's API key")
    r.add_argument("--concurrency-limit", type=int)
    r.add_argument("--json", action="store_true", help="list: machine-readable output")
    r.set_defaults(func=cmd_routes)


__all__ = ["StoreError", "add_parser", "routes_from_outputs"]

"""agentcloud: the command line. Thin: parse, call the modules, print."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentcloud import version
from agentcloud.catalog import Catalog, catalog_sources, load_catalog
from agentcloud.catalog_sync import catalog_age
from agentcloud.cli.deployments import add_parser as add_deployments
from agentcloud.cli.gateway import add_parser as add_gateway
from agentcloud.cli.output import error, table
from agentcloud.errors import InfraError, PlanError
from agentcloud.planner import ServingPlan, plan
from agentcloud.project import stacks_dir
from agentcloud.render import ENV_FILE, render
from agentcloud.spec import load_stack, resolve_stack, stack_files, stack_name_of
from agentcloud.store import StoreError

COLUMNS = (
    ("stack", "stack"),
    ("gpu_type", "gpu"),
    ("size_slug", "slug"),
    ("region", "region"),
    ("replicas", "replicas"),
    ("engine", "engine"),
    ("quantization", "quant"),
    ("tensor_parallel", "tp"),
    ("fit", "fit"),
    ("max_kv_tokens", "max KV tokens"),
    ("hourly_usd", "$/h"),
    ("monthly_usd", "$/month"),
)


def _format(key: str, value: Any) -> str:
    if key == "max_kv_tokens":
        return f"{value:,}"
    if key in ("hourly_usd", "monthly_usd"):
        return f"{value:,.2f}"
    return str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    table(
        [[title for _, title in COLUMNS]]
        + [[_format(k, r.get(k, "")) if r.get(k) is not None else "-" for k, _ in COLUMNS] for r in rows],
        rule=True,
        colour_column=8,
    )


def _plan_stacks(
    paths: Sequence[Path], catalog: Catalog
) -> tuple[list[tuple[str, ServingPlan]], dict[str, list[ServingPlan]], list[str], bool]:
    """Plans, each stack's fallback plans, failures, and whether any failure is bad input (exit 2) rather
    than a plan that does not fit."""
    plans: list[tuple[str, ServingPlan]] = []
    fallbacks: dict[str, list[ServingPlan]] = {}
    failures: list[str] = []
    bad_input = False
    for path in paths:
        name = path.name
        try:
            name = stack_name_of(path)
            spec = load_stack(path, catalog)
            plans.append((name, plan(spec, catalog)))
            fallbacks[name] = []
            for i, alternative in enumerate(spec.alternatives()[1:], start=1):
                try:
                    fallbacks[name].append(plan(alternative, catalog))
                except PlanError as exc:
                    first = str(exc).splitlines()[0]
                    failures.append(
                        f"{path}: fallback {i} ({alternative.placement()}) cannot be served: {first}"
                    )
        except PlanError as exc:
            failures.append(f"{path}: cannot be served as declared: {exc}")
        except InfraError as exc:
            failures.append(str(exc))
            bad_input = True
    return plans, fallbacks, failures, bad_input


def cmd_plan(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    paths = [resolve_stack(s) for s in args.stacks] or stack_files()
    if not paths:
        print(
            f"no deployment stack files in {stacks_dir()}; add one (see `agentcloud init`)", file=sys.stderr
        )
        return 2
    plans, fallbacks, failures, bad_input = _plan_stacks(paths, catalog)
    rows = [
        {
            "stack": name,
            **p.summary(),
            "fallbacks": [
                {
                    "where": f"{f.region} on {f.gpu_type_name}",
                    "hourly_usd": f.hourly_usd,
                    "fit": f.fit.verdict,
                }
                for f in fallbacks.get(name, [])
            ],
        }
        for name, p in plans
    ]
    live: list[dict[str, Any]] = []
    if args.live and plans:
        from agentcloud.live import choose, fetch_sizes

        sizes = fetch_sizes(_token(), endpoint=args.api_endpoint)
        live = [choose(name, [p, *fallbacks.get(name, [])], sizes) for name, p in plans]
    oldest, unrecorded = catalog_age(catalog)
    if args.json:
        out: dict[str, Any] = {
            "plans": rows,
            "errors": failures,
            "catalog": {"oldest_check": str(oldest) if oldest else None, "unrecorded": unrecorded},
        }
        if args.live:
            out["live"] = live
        print(json.dumps(out, indent=2))
    else:
        if rows:
            print_table(rows)
            for r in rows:
                for i, f in enumerate(r["fallbacks"], start=1):
                    print(
                        f"  fallback [{r['stack']}] {i}: {f['where']}, ${f['hourly_usd']:.2f}/h ({f['fit']})"
                    )
                for note in r["notes"]:
                    print(f"  note [{r['stack']}]: {note}")
        if not args.stacks:  # stack files that declare no GPU deployment: said, not silently skipped
            for other in sorted(set(stacks_dir().glob("Pulumi.*.y*ml")) - set(paths)):
                print(
                    f"  note: {other.name} declares no GPU deployment (the gateway's own stack?): "
                    f"`pulumi preview -s {stack_name_of(other)}` shows it"
                )
        print(f"  catalog: {age_note(oldest, unrecorded)}")
        for a in live:
            mark = "ok " if a["offered"] else "NO "
            print(f"  live [{a['stack']}] {mark}{a['size_slug']} in {a['region']}: {a['note']}")
            if a.get("chosen"):
                print(f"  live [{a['stack']}] an up now lands on {a['chosen']}")
        for failure in failures:
            print(f"\nerror: {failure}", file=sys.stderr)
    live_ok = all(a["offered"] or a.get("chosen") for a in live)
    return 2 if bad_input else 1 if failures or not live_ok else 0


def age_note(oldest: datetime.date | None, unrecorded: int) -> str:
    """How old the catalog's prices and regions are, for people."""
    fix = "`agentcloud catalog sync` checks them against DigitalOcean"
    if oldest is None:
        return f"no price or region records when it was last checked; {fix}"
    days = (datetime.date.today() - oldest).days
    text = f"prices and regions last checked {oldest} ({days} days ago at the oldest)"
    if unrecorded:
        text += f"; {unrecorded} record no date"
    return text + (f"; {fix}" if days > 30 or unrecorded else "")


def cmd_up(args: argparse.Namespace) -> int:
    """A stack's `pulumi up` through the Automation API, with its fallbacks when DigitalOcean has no capacity
    (what the GitOps workflow applies with)."""
    from agentcloud.compose import stack_ops_from
    from agentcloud.project import require_project

    project = require_project()
    path = resolve_stack(args.stack)
    load_stack(path, load_catalog(args.catalog))  # every problem of the file first, before any cloud call
    spec = os.environ.get("AGENTCLOUD_STACK_OPS")
    if spec:
        ops = stack_ops_from(spec, project.root)
    else:
        from agentcloud.lifecycle.operations import PulumiStackOps

        ops = PulumiStackOps(project.root, policy_pack=args.policy_pack)
    ops.preflight()
    progress = lambda line: print(f"    {line.rstrip()}", flush=True)  # noqa: E731
    live = (
        {"replicas": args.replicas} if args.replicas else {"keep_live": True}
    )  # git's count is where it starts
    outputs = ops.up(stack_name_of(path), progress, **live)
    placement = outputs.get("placement") or {}
    endpoints = outputs.get("endpoints") or []
    problem = _push_engine_secrets(outputs)
    if problem:
        error(f"{stack_name_of(path)}: up done, but the engine secrets were not delivered: {problem}")
        return 1
    print(
        f"{stack_name_of(path)}: up on {placement.get('where', 'its declared placement')}, "
        f"{len(endpoints)} endpoint(s): {', '.join(str(e.get('private_ip')) for e in endpoints) or '-'}"
    )
    return _register(stack_name_of(path), path) if args.register else 0


def _register(stack: str, path: Path) -> int:
    """`up --register`: the gateway (AGENTCLOUD_URL, an admin key in AGENTCLOUD_API_KEY) serves the stack and
    its autoscaler owns the live replica count; registering again at each apply follows the file."""
    from agentcloud.cli.client import Client

    key, url = os.environ.get("AGENTCLOUD_API_KEY"), os.environ.get("AGENTCLOUD_URL", "http://127.0.0.1:8080")
    if not key:
        error("--register: set AGENTCLOUD_API_KEY (an admin key of your org) and AGENTCLOUD_URL")
        return 2
    body = {"stack": stack, "stack_file": path.read_text(encoding="utf-8")}
    dep = Client(url, key, api="/api/v1/public/gitops/stacks").call("POST", json=body)
    print(f"{stack}: registered with the gateway at {url} as {dep['id']} ({dep['status']})")
    return 0


def _push_engine_secrets(outputs: dict[str, Any]) -> str | None:
    """After an up from git: the engine's secrets to every droplet, as the control plane does after its ups
    (AGENTCLOUD_ENGINE_API_KEY, AGENTCLOUD_HF_TOKEN, AGENTCLOUD_SSH_KEY). Without a key: said, not failed."""
    from agentcloud.control.outputs import routes_from_outputs
    from agentcloud.control.secrets_push import pusher
    from agentcloud.gateway.config import GatewayConfig

    push = pusher(GatewayConfig.from_env())
    routes = routes_from_outputs(outputs, None)
    if not routes["endpoints"]:
        return None
    if push is None:
        print(
            "    note: engine secrets not pushed (no AGENTCLOUD_ENGINE_API_KEY): the engines wait until "
            "`agentcloud secrets push STACK` delivers them"
        )
        return None
    problem = push(routes["hosts"], str(routes.get("engine") or "vllm"))
    if problem is None:
        print(f"    engine secrets delivered to {len(routes['hosts'])} droplet(s)")
    return problem


def cmd_render(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    path = resolve_stack(args.stack)
    serving = plan(load_stack(path, catalog), catalog)
    rendered = render(serving)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, content in sorted(rendered.files.items()):
        (out / name).write_text(content, encoding="utf-8")
        print(f"wrote {out / name}")
    print(
        "note: user-data.yaml is what `pulumi up` sends, except the SSH host key, which `pulumi up` "
        "generates: markers stand in its place"
    )
    return 0


def _secret_values(args: argparse.Namespace, engine: str) -> dict[str, str]:
    """HF token and engine API key: environment first, else the stack's secret config."""
    from agentcloud import automation

    hf = os.environ.get("AGENTCLOUD_HF_TOKEN")
    key = os.environ.get("AGENTCLOUD_ENGINE_API_KEY")
    if key is None and not args.host:
        hf = hf or automation.secret_config(args.stack, "agent-cloud:hfToken")
        key = automation.secret_config(args.stack, "agent-cloud:engineApiKey")
    if not key:
        raise InfraError(
            "no engine API key: run `pulumi config set --secret agent-cloud:engineApiKey <key>` "
            "or set AGENTCLOUD_ENGINE_API_KEY"
        )
    values = {"VLLM_API_KEY" if engine == "vllm" else "LLAMA_API_KEY": key}
    if hf:
        values["HF_TOKEN"] = hf
    return values


def cmd_secrets_push(args: argparse.Namespace) -> int:
    from agentcloud import automation
    from agentcloud.remote import Target, push_env

    catalog = load_catalog(args.catalog)
    serving = plan(load_stack(resolve_stack(args.stack), catalog), catalog)
    if args.host:
        if not args.host_key:
            raise InfraError("--host needs --host-key (the stack output host_public_key)")
        hosts, host_key = list(args.host), args.host_key
    else:
        out = automation.outputs(args.stack)
        hosts = [e["public_ip"] for e in out.get("endpoints", [])]
        host_key = out.get("host_public_key", "")
    if not hosts:
        print(f"{args.stack}: no running droplets (scaled to zero?); nothing to do")
        return 0
    targets = [Target(host=h, port=args.port, username=args.user, host_public_key=host_key) for h in hosts]
    values = _secret_values(args, serving.engine)
    if serving.model.gated and "HF_TOKEN" not in values:
        print(f"warning: {serving.model_id} is gated on Hugging Face and no HF token is set", file=sys.stderr)
    for host in push_env(targets, values, args.remote_path, key_filename=args.identity):
        print(
            f"{args.stack}: secrets delivered to {host} ({', '.join(sorted(values))}); the engine starts now"
        )
    return 0


def cmd_gitops(args: argparse.Namespace) -> int:
    from agentcloud.gitops import report

    rows, text = report(args.files, args.base, load_catalog(args.catalog))
    if args.stacks:
        for r in rows:
            print(r["file"])
    else:
        print(json.dumps(rows, indent=2) if args.json else text)
    return 1 if any(r["error"] for r in rows) else 0


def _token() -> str:
    token = os.environ.get("DIGITALOCEAN_TOKEN") or os.environ.get("DIGITALOCEAN_ACCESS_TOKEN")
    if not token:
        raise InfraError(
            "this asks DigitalOcean's API and needs a token: export DIGITALOCEAN_TOKEN=... "
            "(read scope is enough)"
        )
    return token


def cmd_catalog_sync(args: argparse.Namespace) -> int:
    from agentcloud.catalog_sync import sync
    from agentcloud.live import fetch_regions, fetch_sizes

    token = _token()
    sizes = fetch_sizes(token, endpoint=args.api_endpoint)
    regions = fetch_regions(token, endpoint=args.api_endpoint)
    result = sync(sizes, args.catalog, check=args.check, regions=regions)
    for note in result.notes:
        print(f"  note: {note}")
    if args.check:
        for change in result.changes:
            print(f"  differs: {change}")
        if result.changes:
            print(
                f"{len(result.changes)} value(s) differ from {args.api_endpoint}: "
                "run `agentcloud catalog sync`"
            )
            return 1
        print(f"the catalog agrees with {args.api_endpoint} on every self-serve price and region")
        return 0
    if result.diff:
        print(result.diff, end="")
    changed = ", ".join(str(c) for c in result.changes) or "no value changed"
    print(
        f"synced with {args.api_endpoint}: {changed}; checked dates renewed in "
        f"{', '.join(map(str, result.files))}"
    )
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    if args.action == "sync":
        return cmd_catalog_sync(args)
    catalog = load_catalog(args.catalog)
    if args.action != "check":
        rows: list[tuple[str, ...]]
        if args.action == "models":
            rows = [("MODEL", "TASK", "TIER", "PARAMS (B)", "CONTEXT", "DEPLOYABLE")]
            rows += [
                (
                    name,
                    m.task.value,
                    m.tier,
                    f"{m.params_b:g}",
                    f"{m.context_window:,}",
                    "yes" if m.deployable else "-",
                )
                for name, m in sorted(catalog.models.items())
                if not args.task or m.task.value == args.task
            ]
        elif args.action == "gpus":
            rows = [("GPU", "SIZE", "GPUS", "VRAM/GPU GiB", "$/H", "REGIONS")]
            for name, g in sorted(catalog.gpu_types.items(), key=lambda kv: kv[1].hourly_usd):
                regions = [r for r, reg in sorted(catalog.regions.items()) if name in reg.gpu_types]
                if args.region and args.region not in regions:
                    continue
                rows.append(
                    (
                        name,
                        g.size_slug,
                        str(g.gpus),
                        f"{g.vram_gib_per_gpu:g}",
                        f"{g.hourly_usd:.2f}",
                        ", ".join(regions) or "-",
                    )
                )
        elif args.action == "presets":
            rows = [("PRESET", "GPU", "PRECISION", "KV CACHE", "DESCRIPTION")]
            rows += [
                (name, p.gpu_type, p.precision.value, p.kv_cache_dtype, p.description)
                for name, p in sorted(catalog.presets.items())
            ]
        else:  # regions
            rows = [("REGION", "NAME", "GPU TYPES")]
            rows += [
                (slug, r.name, ", ".join(r.gpu_types) or "-") for slug, r in sorted(catalog.regions.items())
            ]
        if args.json:
            print(json.dumps([dict(zip(rows[0], r, strict=True)) for r in rows[1:]], indent=2))
        else:
            table(rows)
        return 0
    print(
        f"{' + '.join(map(str, catalog_sources(args.catalog)))}: ok ({len(catalog.gpu_types)} gpu types, "
        f"{len(catalog.regions)} regions, "
        f"{len(catalog.presets)} presets, {len(catalog.models)} models, {len(catalog.plans)} plans)"
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from agentcloud.init import init

    directory = Path(args.directory)
    written = init(directory)
    for path in written:
        print(f"  wrote {path}")
    here = "" if directory.resolve() == Path.cwd().resolve() else f"cd {args.directory} && "
    print(
        f"\n{directory}: a new agentcloud repository with one example stack. Next:\n"
        f"  {here}agentcloud plan          # plans stacks/Pulumi.example.yaml offline\n"
        f"  git init && git add . && git commit -m 'agentcloud deployments'\n"
        f"  then README.md: pulumi up on DigitalOcean, and the GitOps workflow's secrets"
    )
    return 0


def cmd_local_tiny_model(args: argparse.Namespace) -> int:
    try:
        from agentcloud.tiny_gguf import write_tiny_gguf
    except ImportError as exc:
        raise InfraError(
            f"`agentcloud local tiny-model` needs the packages of the 'local' extra ({exc.name} is missing): "
            "pip install 'agentcloud[local]'"
        ) from None
    path = Path(args.path)
    if path.exists() and not args.force:
        raise InfraError(f"{path}: already exists; choose another path or pass --force to replace it")
    write_tiny_gguf(path, name=args.name)
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, random weights: it answers with gibberish). "
        f"Serve it: llama-server -m {path} --alias {args.name} --port 8000"
    )
    return 0


def cmd_local_up(args: argparse.Namespace) -> int:
    """The twin of DigitalOcean and a gateway on this machine: prints the endpoint and an admin key, serves
    until Ctrl-C, then removes every droplet."""
    import signal

    from agentcloud.compose import build
    from agentcloud.gateway.config import GatewayConfig
    from agentcloud.gateway.server import limits_of, serve
    from agentcloud.twin.local import admin_key, find_llama_server, local_cloud, preflight

    preflight()
    server = find_llama_server(args.llama_server)
    catalog = load_catalog(args.catalog)
    with local_cloud(Path(args.dir).resolve(), server, catalog) as cloud:
        config = GatewayConfig.from_env()
        key = admin_key(config, catalog, cloud.admin_key_file)
        gateway = build(config, catalog=catalog)
        url = f"http://127.0.0.1:{args.port}"
        lines = [
            f"a local cloud: the twin of DigitalOcean at {cloud.twin_url} (its droplets are network",
            f"namespaces; llama.cpp on a tiny model stands in for the engines) and the gateway at {url}",
            f"  OpenAI-compatible: {url}/v1   Anthropic: {url}/v1/messages",
            f"  management API:    {url}/api/v1/public   console: {url}/console",
            f"  admin key (org_local): {key}   (also in {cloud.admin_key_file})",
            "  create a deployment from a stack file (`agentcloud init` makes one):",
            f"    AGENTCLOUD_URL={url} AGENTCLOUD_API_KEY=$(cat {cloud.admin_key_file}) \\",
            "      agentcloud deployments create stacks/Pulumi.example.yaml",
            "Ctrl-C stops it and removes every droplet.",
        ]
        print("\n".join(lines), flush=True)
        # the server hands SIGTERM back once it has stopped: leave through the cleanup, as Ctrl-C does
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        serve(gateway, "127.0.0.1", args.port, limits_of(gateway.config))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentcloud", description="Dedicated-GPU LLM deployments as code")
    parser.add_argument(
        "--catalog",
        help="a whole catalog to use instead of the shipped one and the project's presets.yaml overlay",
    )
    parser.add_argument("--version", action="version", version=f"agentcloud {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    i = sub.add_parser("init", help="start a new repository of deployments (GitOps-ready, plans offline)")
    i.add_argument("directory", nargs="?", default=".", help="folder to create (default: here, if empty)")
    i.set_defaults(func=cmd_init)

    loc = sub.add_parser("local", help="try things on this machine with no cloud account")
    loc_sub = loc.add_subparsers(dest="action", required=True)
    tm = loc_sub.add_parser(
        "tiny-model", help="write a tiny random-weight GGUF that llama.cpp serves (nothing downloaded)"
    )
    tm.add_argument("path", help="the .gguf file to write")
    tm.add_argument("--name", default="tiny", help="the model name in its metadata (default: tiny)")
    tm.add_argument("--force", action="store_true", help="replace an existing file")
    tm.set_defaults(func=cmd_local_tiny_model)
    lu = loc_sub.add_parser(
        "up", help="the twin of DigitalOcean and a gateway on this machine (root): endpoint and admin key"
    )
    lu.add_argument("--port", type=int, default=8080, help="the gateway's port on 127.0.0.1 (default 8080)")
    lu.add_argument("--dir", default="agentcloud-local", help="its folder, wiped at each start")
    lu.add_argument("--llama-server", help="the llama-server binary (default: PATH, AGENTCLOUD_LLAMA_SERVER)")
    lu.set_defaults(func=cmd_local_up)

    p = sub.add_parser("plan", help="plan stacks offline: gpu, engine, fit, cost")
    p.add_argument("stacks", nargs="*", help="stack names or files (default: every stack in stacks/)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--live", action="store_true", help="ask DigitalOcean whether each size is offered now")
    p.add_argument(
        "--api-endpoint",
        default=os.environ.get("DIGITALOCEAN_API_ENDPOINT", "https://api.digitalocean.com"),
        help=argparse.SUPPRESS,
    )
    p.set_defaults(func=cmd_plan)

    u = sub.add_parser("up", help="pulumi up a stack, moving to its fallbacks when there is no capacity")
    u.add_argument("stack", help="stack name or file")
    u.add_argument("--policy-pack", help="a policy pack folder to enforce (the GitOps workflow: policy)")
    u.add_argument(
        "--replicas",
        type=int,
        help="run with this many replicas, within the stack's scaling bounds (default: as many as run now)",
    )
    u.add_argument(
        "--register",
        action="store_true",
        help="then register it with the gateway (AGENTCLOUD_URL, AGENTCLOUD_API_KEY): served, autoscaled",
    )
    u.set_defaults(func=cmd_up)

    r = sub.add_parser("render", help="write every rendered artefact of a stack for review")
    r.add_argument("stack")
    r.add_argument("-o", "--output", required=True, help="directory to write into")
    r.set_defaults(func=cmd_render)

    sec = sub.add_parser("secrets", help="deliver the engine's secrets to a deployment's droplets over SSH")
    sec_sub = sec.add_subparsers(dest="action", required=True)
    push = sec_sub.add_parser(
        "push", help="write HF token and engine API key to every droplet (host key pinned)"
    )
    push.add_argument("stack")
    push.add_argument("--identity", "-i", help="SSH private key file (default: agent and ~/.ssh keys)")
    push.add_argument("--host", action="append", help="droplet address (default: the stack's outputs)")
    push.add_argument("--host-key", help="pinned host public key (default: the stack's output)")
    push.add_argument("--user", default="root", help="SSH user (default: root)")
    push.add_argument("--port", type=int, default=22, help=argparse.SUPPRESS)
    push.add_argument("--remote-path", default=ENV_FILE, help=argparse.SUPPRESS)
    push.set_defaults(func=cmd_secrets_push)

    add_gateway(sub)
    add_deployments(sub)

    g = sub.add_parser(
        "gitops", help="for pull requests: the stacks a change of stack files or presets.yaml touches, $/h"
    )
    g.add_argument("action", choices=["report"])
    g.add_argument("files", nargs="*")
    g.add_argument("--base", default="origin/main", help="git ref the change is compared with")
    g.add_argument("--json", action="store_true", help="machine-readable output")
    g.add_argument("--stacks", action="store_true", help="only the touched stack files, one per line")
    g.set_defaults(func=cmd_gitops)

    c = sub.add_parser(
        "catalog",
        help="validate the catalog, list its models, gpus, presets or regions, or sync prices and regions "
        "with DigitalOcean",
    )
    c.add_argument("action", choices=["check", "models", "gpus", "presets", "regions", "sync"])
    c.add_argument("--check", action="store_true", help="sync: change nothing, exit 1 when the API differs")
    c.add_argument(
        "--api-endpoint",
        default=os.environ.get("DIGITALOCEAN_API_ENDPOINT", "https://api.digitalocean.com"),
        help=argparse.SUPPRESS,
    )
    c.add_argument("--task", help="models: only this task (generate, embed, rerank, transcribe, speech)")
    c.add_argument("--region", help="gpus: only those offered in this region")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_catalog)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done; 1 a plan that does not fit, or an operation that ended badly; 2 bad input, or
    something the command needs that is missing or unreachable (the message says which, and how to fix it);
    3 a bug of agentcloud (one line asking for a report; AGENTCLOUD_DEBUG=1 shows the traceback); 130
    interrupted."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PlanError as exc:
        error(str(exc))
        return 1
    except (InfraError, StoreError) as exc:
        error(str(exc))
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("AGENTCLOUD_DEBUG"):
            raise
        error(
            f"agentcloud {version()} failed unexpectedly ({type(exc).__name__}: {exc}). This is a "
            "bug: please report it with the command you ran; AGENTCLOUD_DEBUG=1 shows where it happened"
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())

"""`agentcloud deployments upload DEP FILE --name NAME`: a GGUF to a `byom:` deployment, resumable, with
progress.

The file goes in chunks through the resumable upload API (docs/byom.md): declare, PATCH each chunk at the
offset the gateway confirmed, then follow the upload's status through validation and delivery until it is
served (`ready`) or `failed` with its reason. The sha256 is computed while sending and compared with the
gateway's. An interrupted upload prints the command that resumes it (`--resume upl_...`), which asks the
gateway for its offset and continues from there."""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

from agentcloud.cli.client import Client
from agentcloud.cli.output import Progress, status

UPLOADS = "/api/v1/public/models"


def upload(args: argparse.Namespace, client: Client) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path}: no such file; give the path of the .gguf to upload", file=sys.stderr)
        return 2
    size = path.stat().st_size
    api = Client(client.url, client.key, api=UPLOADS)
    if args.resume:
        upload_id = args.resume
        head = api.request("HEAD", f"/uploads/{upload_id}")
        offset = int(head.headers.get("Upload-Offset", "0"))
        print(f"resuming {upload_id} at {offset:,} of {size:,} bytes")
    else:
        created = api.call(
            "POST", "/uploads", json={"name": args.name, "deployment_id": args.id, "size": size}
        )
        upload_id, offset = str(created["id"]), int(created.get("offset", 0))
        print(f"upload {upload_id}: {path.name} as byom:{args.name} to {args.id}")
    digest = hashlib.sha256()
    chunk_bytes = max(1, int(args.chunk_mb * 1024 * 1024))
    answer: dict[str, Any] = {}
    with path.open("rb") as f:
        if offset:  # the part already sent still counts towards the checksum
            remaining = offset
            while remaining:
                block = f.read(min(chunk_bytes, remaining))
                digest.update(block)
                remaining -= len(block)
        progress = Progress(f"sending {path.name}", size, done=offset)
        while offset < size:
            chunk = f.read(chunk_bytes)
            try:
                resp = api.request(
                    "PATCH",
                    f"/uploads/{upload_id}",
                    data=chunk,
                    timeout=600,
                    headers={"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
                )
            except SystemExit as stop:
                progress.finish()
                raise SystemExit(
                    f"{stop.code}\n(interrupted at {offset:,} of {size:,} bytes; resume with: agentcloud "
                    f"deployments upload {args.id} {path} --name {args.name} --resume {upload_id})"
                ) from None
            digest.update(chunk)
            offset = int(resp.headers.get("Upload-Offset", offset + len(chunk)))
            progress.update(offset)
            if resp.status_code == 202:
                answer = resp.json()
        progress.finish()
    if answer.get("sha256") and answer["sha256"] != digest.hexdigest():
        print(
            f"error: the gateway received a different file (sha256 {answer['sha256']}, sent "
            f"{digest.hexdigest()}); cancel it (DELETE {UPLOADS}/uploads/{upload_id}) and upload again",
            file=sys.stderr,
        )
        return 1
    if args.no_wait:
        print(f"{upload_id}: {answer.get('status', 'uploading')}")
        return 0
    return follow_upload(api, upload_id, args.timeout)


def follow_upload(api: Client, upload_id: str, timeout_s: float, interval_s: float = 1.0) -> int:
    """Status changes until the model is served or the upload failed."""
    seen = None
    deadline = time.monotonic() + timeout_s
    while True:
        current = api.call("GET", f"/uploads/{upload_id}")
        state = str(current.get("status"))
        if state != seen:
            seen = state
            reason = f" ({current['reason']})" if current.get("reason") else ""
            print(f"{time.strftime('%H:%M:%S')} {upload_id}: {status(state)}{reason}", flush=True)
        if state == "ready":
            print(f"served as {current.get('model')}")
            return 0
        if state == "failed":
            return 1
        if time.monotonic() > deadline:
            print(f"still {state} after {timeout_s:g} s; check again with GET {UPLOADS}/uploads/{upload_id}")
            return 1
        time.sleep(interval_s)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="the byom: deployment (dep_...)")
    parser.add_argument("file", help="the .gguf file")
    parser.add_argument("--name", required=True, help="the model's name: it is served as byom:<name>")
    parser.add_argument("--resume", metavar="UPLOAD_ID", help="continue an interrupted upload")
    parser.add_argument("--chunk-mb", type=float, default=64, help="size of each request (default 64 MiB)")
    parser.add_argument("--timeout", type=float, default=3600, help="how long to follow delivery (s)")

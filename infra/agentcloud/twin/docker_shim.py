"""`docker` on a twin droplet: runs the rendered engine's `docker run` of the vLLM or llama.cpp image as
`llama-server` on a tiny GGUF, with the same port, API key and model name (no GPU, no image pull).

`docker rm ...` succeeds and does nothing; `docker run ... IMAGE ARGS` reads what the real container would get
(published port, `--env-file`, `-e`, `-v`), and for the llama.cpp image its own server arguments (an uploaded
model's `LLAMA_ARG_MODEL` and `LLAMA_ARG_ALIAS` from byom.env: that GGUF, found through the `-v` mount), for
the vLLM image its `--config` file (port, served model name); the engine's key comes from `LLAMA_API_KEY` /
`VLLM_API_KEY` of the environment file, as the real engines read it. Environment:
AGENTCLOUD_TWIN_LLAMA_SERVER (the binary), AGENTCLOUD_TWIN_MODEL (the GGUF), AGENTCLOUD_TWIN_HOST (the
droplet's private address)."""

from __future__ import annotations

import os
import sys

import yaml


def _env_file(path: str) -> dict[str, str]:
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                values[key] = value.strip().strip('"').strip("'")
    return values


def _host_path(path: str, volumes: dict[str, str]) -> str:
    """Where a path inside the container is on the host, through the longest matching `-v` mount."""
    for target in sorted(volumes, key=len, reverse=True):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return volumes[target] + path[len(target.rstrip("/")) :]
    return path


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("rm", "pull", "stop"):
        return 0
    if argv[0] != "run":
        print(f"twin docker: {argv[0]} is not supported", file=sys.stderr)
        return 2
    env: dict[str, str] = {}
    volumes: dict[str, str] = {}  # container path -> host path
    port = None
    i = 1
    with_value = {"--name", "-v", "--volume", "--gpus", "--device", "--shm-size", "--ipc", "--group-add"}
    while i < len(argv) and argv[i].startswith("-"):
        flag = argv[i]
        if flag in ("-p", "--publish"):
            port = argv[i + 1].split(":")[0]
        elif flag == "--env-file":
            env.update(_env_file(argv[i + 1]))
        elif flag in ("-v", "--volume"):
            source, _, target = argv[i + 1].partition(":")
            volumes[target.split(":")[0]] = source
        elif flag in ("-e", "--env"):
            name, _, value = argv[i + 1].partition("=")
            env[name] = value
        elif flag not in with_value:
            i += 1  # a flag without a value (--rm, --privileged)
            continue
        i += 2
    image, args = argv[i], argv[i + 1 :]
    alias, parallel = "model", "2"
    key: str | None = None
    if "vllm" in image:
        config_path = args[args.index("--config") + 1] if "--config" in args else None
        config: dict[str, object] = {}
        if config_path:
            with open(config_path, encoding="utf-8") as f:
                config = yaml.safe_load(f) or {}
        port = str(config.get("port", port or 8000))
        alias = str(config.get("served-model-name", alias))
        key = env.get("VLLM_API_KEY")
    else:
        if "--port" in args:
            port = args[args.index("--port") + 1]
        alias = args[args.index("--alias") + 1] if "--alias" in args else alias
        parallel = args[args.index("--parallel") + 1] if "--parallel" in args else parallel
        key = env.get("LLAMA_API_KEY")
    model = os.environ["AGENTCLOUD_TWIN_MODEL"]
    if env.get("LLAMA_ARG_MODEL"):  # an uploaded GGUF (byom.env): the file itself, through the volume
        model = _host_path(env["LLAMA_ARG_MODEL"], volumes)
        alias = env.get("LLAMA_ARG_ALIAS", alias)
    command = [
        os.environ["AGENTCLOUD_TWIN_LLAMA_SERVER"],
        "-m",
        model,
        "--host",
        os.environ.get("AGENTCLOUD_TWIN_HOST", "0.0.0.0"),
        "--port",
        str(port or 8000),
        "--alias",
        alias,
        "--parallel",
        str(min(int(parallel), 4)),
        "--ctx-size",
        "2048",
        "--metrics",
    ]
    if key:
        command += ["--api-key", key]
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))

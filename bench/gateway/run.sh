#!/usr/bin/env bash
# Gateway overhead benchmark, with the shared proxy harness (../shared/bench/proxy): the direct baseline, this
# gateway (one process, auth + rate limits + metrics on), then LiteLLM proxy against the same baseline.
#   bash bench/gateway/run.sh            # full run (~10 minutes with LiteLLM)
#   SKIP_LITELLM=1 bash bench/gateway/run.sh
#   HARNESS_ARGS="--reps 1 --duration 2" bash bench/gateway/run.sh
# Results: bench/results/<stamp>-*/summary.md (git-ignored); the figures we keep are in docs/gateway.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HARNESS="${HARNESS:-$ROOT/../shared/bench/proxy}"
CACHE="${AGENTCLOUD_CACHE:-$HOME/.cache/agentcloud}"
export BENCH_VENV="${BENCH_VENV:-$CACHE/bench-venv}"
export LITELLM_VENV="${LITELLM_VENV:-$CACHE/litellm-venv}"
export LITELLM_BIN="$LITELLM_VENV/bin/litellm"
OUT="$ROOT/bench/results"
STAMP="$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
[ -d "$HARNESS" ] || { echo "harness not found at $HARNESS (set HARNESS=...)" >&2; exit 2; }
command -v wrk >/dev/null || echo "note: install wrk (apt-get install wrk) for the non-streaming runs" >&2

# A store with one benchmark key: limits are checked on every request, set high enough not to bite.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export AGENTCLOUD_DATABASE="$WORK/gateway.sqlite3"
export AGENTCLOUD_KEY_PEPPER="bench-pepper-$STAMP"
export AGENTCLOUD_UPLOAD_DIR="$WORK/models"
AC="$ROOT/.venv/bin/agentcloud"
"$AC" gateway orgs create bench --id org_bench >/dev/null
KEY="$("$AC" gateway keys create --org org_bench --plan enterprise --rpm 100000000 --tpm 2000000000 --json \
  | "$ROOT/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["key"])')"

# shellcheck disable=SC2086
[ -n "${BASELINE_RUN:-}" ] || bash "$HARNESS/run.sh" --proxy-name agentcloud --out "$OUT/$STAMP-agentcloud" \
  --proxy-cmd "exec $AC gateway serve --port 4000 --upstream {upstream_v1} --model fake-model" \
  --proxy-url http://127.0.0.1:4000 --model fake-model --api-key "$KEY" \
  --proxy-version-cmd "git -C $ROOT rev-parse --short HEAD" ${HARNESS_ARGS:-}

# BASELINE_RUN=<stamp> reuses an earlier run's agentcloud results and runs only LiteLLM against its baseline.
if [ -n "${BASELINE_RUN:-}" ]; then
  STAMP="$BASELINE_RUN"
fi
if [ -z "${SKIP_LITELLM:-}" ]; then
  # The harness's setup ends with `pip show | head` under pipefail, which can fail on a broken pipe: check the
  # binary instead of its exit status.
  bash "$HARNESS/proxies/litellm/setup.sh" || true
  [ -x "$LITELLM_BIN" ] || { echo "LiteLLM did not install into $LITELLM_VENV" >&2; exit 1; }
  # shellcheck disable=SC2086
  bash "$HARNESS/run.sh" --proxy-name litellm-w1 --out "$OUT/$STAMP-litellm" \
    --proxy-cmd "exec $HARNESS/proxies/litellm/start.sh 4000 1" \
    --proxy-url http://127.0.0.1:4000 --model fake-model --api-key sk-bench-1234 \
    --proxy-version-cmd "$LITELLM_VENV/bin/pip show litellm | head -2" \
    --baseline "$OUT/$STAMP-agentcloud/results.jsonl" ${HARNESS_ARGS:-}
fi
"$BENCH_VENV/bin/python" "$HARNESS/run.py" --summarize "$OUT/$STAMP"-*/results.jsonl

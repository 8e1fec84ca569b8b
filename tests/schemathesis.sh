#!/usr/bin/env bash
# Fuzzes the real server against its own OpenAPI document with schemathesis:
# starts `drover serve` on SQLite in a fresh temporary data directory on a
# free loopback port, makes an administrator (`drover user create --admin`)
# and logs in as them, then runs `schemathesis run` on /openapi.json with
# that bearer token, every check, a bounded number of examples per
# operation and a bounded time. Exits non-zero when schemathesis finds a
# failure that tests/schemathesis-baseline.json does not list (each entry
# there says why that refusal of a schema-valid request is by design: a
# rule that depends on state or on two fields at once, which a schema
# cannot state). The server is stopped by its pid and the directory removed
# however the script ends.
#
# Builds nothing: the binary is $DROVER, or target/debug/drover, which
# `cargo test` (run by .ci/run before this script) has built.
#
# Usage: tests/schemathesis.sh [extra schemathesis run arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

drover=${DROVER:-${CARGO_TARGET_DIR:-target}/debug/drover}
# Test cases per operation and the whole run's time budget, in seconds:
# enough to cover every operation's phases, bounded so CI stays short.
MAX_EXAMPLES=${MAX_EXAMPLES:-25}
MAX_TIME=${MAX_TIME:-300}
# A fixed seed makes CI repeatable: the same cases every run, so a red run
# means a change broke something, not that the fuzzer drew a new case.
# SEED=random explores (do it when changing the API, and fix what it finds).
SEED=${SEED:-20261204}
# The version the baseline was written with (its format may change).
SCHEMATHESIS_VERSION=4.32.5
# How long drover may take to write its ready file.
READY_TIMEOUT=30
# SIGTERM drains (worker.drain_timeout is 30 s); past this, SIGKILL.
STOP_TIMEOUT=40

if [[ ! -x $drover ]]; then
    echo "tests/schemathesis.sh: no drover binary at $drover (set DROVER, or run cargo build first)" >&2
    exit 1
fi
# Installed once; pip is not asked again while the module imports.
installed=$(python3 -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true)
if [[ $installed != "$SCHEMATHESIS_VERSION" ]]; then
    python3 -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
seed_args=()
[[ $SEED == random ]] || seed_args=(--seed "$SEED")

dir=$(mktemp -d)
server_pid=""
cleanup() {
    local status=$?
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq $((STOP_TIMEOUT * 10))); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -s $dir/drover.log ]]; then
        echo "-- drover's log (last 50 lines):"
        tail -n 50 "$dir/drover.log"
    fi
    rm -rf -- "$dir"
}
trap cleanup EXIT

# The configuration of both the server and `user create`: SQLite in the
# fresh data directory. Rate limits are off for this run: schemathesis
# sends hundreds of logins and registrations from one address, which the
# default [rate_limit] (20 a minute, 20 an hour) would answer with 429
# after the first few, leaving those routes untested.
export DROVER_SERVER__DATA_DIR=$dir/data
export DROVER_SERVER__CONTROL_SOCKET=$dir/drover.sock
export DROVER_SERVER__ADMIN_LISTEN=""
export DROVER_RATE_LIMIT__ENABLED=false
export DROVER_LOG__FORMAT=json
unset DROVER_DATABASE__URL RUST_LOG

# An administrator, so the admin routes are exercised rather than only
# answering 403.
email="schemathesis-admin@example.com"
password="schemathesis password $$"
printf '%s\n' "$password" |
    "$drover" user create --email "$email" --name "Schemathesis" --admin --password-stdin >/dev/null 2>>"$dir/drover.log"

"$drover" serve --listen 127.0.0.1:0 --workers 1 --ready-file "$dir/ready.json" \
    </dev/null >/dev/null 2>"$dir/drover.log" &
server_pid=$!
deadline=$((SECONDS + READY_TIMEOUT))
until [[ -s $dir/ready.json ]]; do
    kill -0 "$server_pid" 2>/dev/null || { echo "tests/schemathesis.sh: drover exited before it was ready" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "tests/schemathesis.sh: drover not ready in ${READY_TIMEOUT}s" >&2; exit 1; }
    sleep 0.1
done
addr=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listen"][0])' "$dir/ready.json")
case $addr in
    127.0.0.1:*) ;;
    *) echo "tests/schemathesis.sh: drover listens on $addr, not 127.0.0.1" >&2; exit 1 ;;
esac
base=http://$addr

token=$(python3 - "$base" "$email" "$password" <<'PY'
import json, sys, urllib.request
base, email, password = sys.argv[1:]
body = json.dumps({"email": email, "password": password}).encode()
request = urllib.request.Request(base + "/v1/auth/login", data=body, headers={"content-type": "application/json"})
print(json.load(urllib.request.urlopen(request, timeout=30))["access_token"])
PY
)

echo "== schemathesis run $base/openapi.json (max ${MAX_EXAMPLES} examples per operation, ${MAX_TIME}s)"
schemathesis --config-file tests/schemathesis.toml run "$base/openapi.json" \
    --url "$base" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --max-examples "$MAX_EXAMPLES" \
    --max-time "$MAX_TIME" \
    --request-timeout 30 \
    --workers 1 \
    --baseline tests/schemathesis-baseline.json \
    --no-color \
    "${seed_args[@]}" \
    "$@"

#!/usr/bin/env bash
# drover reports bench: memory and speed of GET /v1/reports/orders, streamed
# from PostgreSQL. The worker's RSS must not grow with the report's size.
#
# One worker on SERVER_CPU, PostgreSQL holding ROWS orders. Then, each with
# curl on LOAD_CPU writing to /dev/null while the worker's RSS is sampled
# every 50 ms:
#   - the whole report as CSV, as NDJSON, and as CSV with gzip and brotli:
#     rows, bytes, seconds, MB/s, the worker's RSS before and at its peak;
#   - a slow client (curl --limit-rate SLOW_RATE) for SLOW_SECONDS: the RSS
#     peak while it reads, which must stay flat (backpressure, not
#     buffering), and that the query stops once it hangs up.
#   - /healthz p99 (oha, open loop at HEALTH_RATE) alone, then while
#     CLIENTS curl processes download DOWNLOAD_MB brotli-compressed reports
#     over and over (the worker restarted with reports.max_running = CLIENTS).
# Goals (issue 12): 1,000,000 rows grow the worker's RSS by less than 16 MiB;
# /healthz p99 with the downloads stays within 2 x its p99 without them.
#
#   bash bench/reports.sh                  # ~1 min plus the build
#   ROWS=100000 SKIP_BUILD=1 bash bench/reports.sh
#
# Knobs (environment variables, defaults in brackets):
#   ROWS [1000000]     orders in the report
#   SLOW_RATE [100k] SLOW_SECONDS [5]   the slow client
#   CLIENTS [16] DOWNLOAD_MB [10] HEALTH_RATE [200] HEALTH_SECONDS [10]
#   PIN_PG [0]         1: move the PostgreSQL backends serving the downloads
#                      to LOAD_CPU, so that the worker's CPU runs only the
#                      worker (what the measurement is about) and not 16
#                      database backends as well
#   OHA [oha]          installed with `cargo install oha --locked` when missing
#   SERVER_CPU [0] LOAD_CPU [1] SKIP_BUILD [0] TARGET_DIR CARGO_LOCK DROVER_BIN,
#   PG_HOST [127.0.0.1] PG_PORT [5432] PG_USER [root] PG_ADMIN_DB [test]
#                      as in the other scripts (bench/lib.sh)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

ROWS=${ROWS:-1000000}
SLOW_RATE=${SLOW_RATE:-100k}
SLOW_SECONDS=${SLOW_SECONDS:-5}
CLIENTS=${CLIENTS:-16}
PIN_PG=${PIN_PG:-0}
DOWNLOAD_MB=${DOWNLOAD_MB:-10}
HEALTH_RATE=${HEALTH_RATE:-200}
HEALTH_SECONDS=${HEALTH_SECONDS:-10}
OHA=${OHA:-oha}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-root}
PG_ADMIN_DB=${PG_ADMIN_DB:-test}
CUR_DB=""

bench_cleanup_init drover-reports-bench
for tool in curl taskset psql awk; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
ensure_oha
bench_preflight
psql_admin 'SELECT 1' >/dev/null || die "PostgreSQL is not reachable at $PG_USER@$PG_HOST:$PG_PORT/$PG_ADMIN_DB"
[[ $SKIP_BUILD == 1 ]] || cargo_build "$ROOT/Cargo.toml" "$TARGET_DIR"

db=drover_reports_bench_$$
psql_admin "CREATE DATABASE \"$db\"" >/dev/null || die "could not create database $db"
DBS_CREATED+=("$db")
url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$db"
CUR_DB=$db

start_drover reports "$url"
worker=${SRV_PIDS[1]}

# An administrator, a customer and ROWS orders, straight into the tables.
printf 'bench password\n' | "$DROVER_BIN" user create --email admin@bench.example --name Admin --admin \
    --password-stdin --database-url "$url" >/dev/null 2>&1 || die "could not create the admin"
login=$(http POST /v1/auth/login '{"email":"admin@bench.example","password":"bench password"}')
TOKEN=$(sed -n 's/.*"access_token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' <<<"$login")
[[ -n $TOKEN ]] || die "no token: $login"
log "== $ROWS orders into $db"
PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" \
    -U "$PG_USER" -d "$db" -c "
    INSERT INTO orders (user_id, status, currency, total_amount, created_at, updated_at)
    SELECT (SELECT id FROM users LIMIT 1), 'placed', 'EUR', (g % 100000) + 1,
           1700000000000 + g, 1700000000000 + g
    FROM generate_series(1, $ROWS) AS g;
    ANALYZE orders;" >/dev/null || die "could not insert the orders"

declare -A FIG
# download name [curl args...]: the whole report to /dev/null
download() {
    local name=$1
    shift
    local before after out=$WORK/$name.rss stats
    # A small report first, so the worker's buffers and the statement exist.
    curl -sS -o /dev/null -H "Authorization: Bearer $TOKEN" "http://$SRV_ADDR/v1/reports/orders?to=2000-01-01"
    before=$(rss_mib "$worker")
    rm -f "$out.stop"
    sample_rss "$worker" "$out" &
    local sampler=$!
    stats=$(taskset -c "$LOAD_CPU" curl -sS -o /dev/null -w '%{size_download} %{time_total} %{http_code}' \
        -H "Authorization: Bearer $TOKEN" "$@")
    touch "$out.stop"
    wait "$sampler"
    after=$(<"$out")
    read -r bytes secs code <<<"$stats"
    [[ $code == 200 ]] || die "$name: HTTP $code"
    FIG[$name]=$(awk -v b="$bytes" -v s="$secs" -v r0="$before" -v r1="$after" -v rows="$ROWS" \
        'BEGIN { printf "%-14s %9d %12d %8.2f %9.1f %10.1f %10.1f %9.1f", "", rows, b, s, b / s / 1e6, r0, r1, r1 - r0 }')
    FIG[$name]="$(printf '%-14s' "$name")${FIG[$name]:14}"
    log "   $name: ${FIG[$name]}"
}

log "== downloads (curl on CPU $LOAD_CPU)"
download csv "http://$SRV_ADDR/v1/reports/orders?format=csv"
download ndjson "http://$SRV_ADDR/v1/reports/orders?format=ndjson"
download csv-gzip -H 'Accept-Encoding: gzip' "http://$SRV_ADDR/v1/reports/orders?format=csv"
download csv-br -H 'Accept-Encoding: br' "http://$SRV_ADDR/v1/reports/orders?format=csv"

log "== a slow client: curl --limit-rate $SLOW_RATE for $SLOW_SECONDS s"
before=$(rss_mib "$worker")
rm -f "$WORK/slow.rss.stop"
sample_rss "$worker" "$WORK/slow.rss" &
sampler=$!
taskset -c "$LOAD_CPU" curl -sS -o /dev/null --limit-rate "$SLOW_RATE" -H "Authorization: Bearer $TOKEN" \
    "http://$SRV_ADDR/v1/reports/orders" &
slow=$!
STARTED+=("$slow")
sleep "$SLOW_SECONDS"
kill "$slow" 2>/dev/null || true
wait "$slow" 2>/dev/null || true
hung_up=$(now_s)
gone=n/a
for ((i = 0; i < 100; i++)); do
    left=$(psql_admin "SELECT count(*) FROM pg_stat_activity WHERE datname = '$db' AND state <> 'idle' AND query LIKE '%FROM orders o JOIN users u%' AND pid <> pg_backend_pid()")
    if [[ $left == 0 ]]; then
        gone=$(awk -v a="$hung_up" -v b="$(now_s)" 'BEGIN { printf "%.0f ms", (b - a) * 1000 }')
        break
    fi
    sleep 0.05
done
touch "$WORK/slow.rss.stop"
wait "$sampler"
slow_peak=$(<"$WORK/slow.rss")

stop_server reports "$SRV_PID"

# ---------------------------------- /healthz beside brotli downloads --
# health_p99 name: /healthz p99 (ms) at HEALTH_RATE for HEALTH_SECONDS.
health_p99() {
    taskset -c "$LOAD_CPU" "$OHA" -q "$HEALTH_RATE" -z "${HEALTH_SECONDS}s" -c 4 --latency-correction \
        --no-tui --output-format json "http://$SRV_ADDR/healthz" >"$WORK/$1.json" 2>/dev/null ||
        die "oha failed on /healthz"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); p=d["latencyPercentiles"]["p99"]; print("%.2f" % (p*1000) if p is not None else "n/a")' "$WORK/$1.json"
}
start_drover reports-load "$url" DROVER_REPORTS__MAX_RUNNING="$CLIENTS" \
    DROVER_DATABASE__PG_POOL_SIZE=$((CLIENTS + 4))
# A new data directory, so new signing keys: log in again.
login=$(http POST /v1/auth/login '{"email":"admin@bench.example","password":"bench password"}')
TOKEN=$(sed -n 's/.*"access_token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' <<<"$login")
[[ -n $TOKEN ]] || die "no token: $login"
# Rows created in the first N milliseconds: about DOWNLOAD_MB of CSV (74 bytes a row).
rows_per=$((DOWNLOAD_MB * 1000000 / 74))
until=$(date -u -d "@$(((1700000000000 + rows_per) / 1000))" +%Y-%m-%dT%H:%M:%SZ)
log "== /healthz p99 alone (oha -q $HEALTH_RATE for ${HEALTH_SECONDS}s)"
alone=$(health_p99 health-alone)
log "   $alone ms"
log "== the same beside $CLIENTS clients downloading ~$DOWNLOAD_MB MB CSV reports (to=$until) brotli-encoded"
stop_file=$WORK/downloads.stop
rm -f "$stop_file"
downloaded=$WORK/downloads.count
: >"$downloaded"
for ((c = 0; c < CLIENTS; c++)); do
    (
        while [[ ! -e $stop_file ]]; do
            code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Accept-Encoding: br' \
                -H "Authorization: Bearer $TOKEN" "http://$SRV_ADDR/v1/reports/orders?to=$until" || echo 000)
            echo "$code" >>"$downloaded"
        done
    ) &
    STARTED+=("$!")
done
sleep 2
if [[ $PIN_PG == 1 ]]; then
    for pid in $(pg_backends); do taskset -p -c "$LOAD_CPU" "$pid" >/dev/null 2>&1 || true; done
    log "   the PostgreSQL backends of $CUR_DB moved to CPU $LOAD_CPU"
fi
beside=$(health_p99 health-beside)
touch "$stop_file"
# The clients finish the download they are in, then stop.
sleep 3
ok_downloads=$(grep -c '^200$' "$downloaded" || true)
other_downloads=$(grep -vc '^200$' "$downloaded" || true)
log "   $beside ms; downloads: $ok_downloads complete, $other_downloads not 200"
stop_server reports-load "$SRV_PID"

printf '\ndrover reports bench: 1 worker on CPU %s, curl on CPU %s, %d orders on PostgreSQL\n\n' \
    "$SERVER_CPU" "$LOAD_CPU" "$ROWS"
printf '%-14s %9s %12s %8s %9s %10s %10s %9s\n' format rows bytes seconds MB/s "RSS MiB" "peak MiB" growth
for name in csv ndjson csv-gzip csv-br; do printf '%s\n' "${FIG[$name]}"; done
printf '\nslow client (%s/s for %s s): RSS %s MiB before, peak %s MiB; the query stopped %s after it hung up\n' \
    "$SLOW_RATE" "$SLOW_SECONDS" "$before" "$slow_peak" "$gone"
printf '/healthz p99 at %s/s: %s ms alone, %s ms beside %s clients downloading %s MB brotli reports (%s downloads done, %s not 200); ratio %s\n' \
    "$HEALTH_RATE" "$alone" "$beside" "$CLIENTS" "$DOWNLOAD_MB" "$ok_downloads" "$other_downloads" "$(ratio "$beside" "$alone")"
printf 'goals: growth < 16 MiB for 1,000,000 rows; /healthz p99 ratio <= 2\n'

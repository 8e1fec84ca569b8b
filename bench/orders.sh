#!/usr/bin/env bash
# drover orders benchmark, on PostgreSQL: POST /v1/orders (one transaction
# each: reserve stock, insert the order and its line, store the idempotent
# answer) over 1,000 products (low contention) and over 1 product (every
# order locks the same row), then GET /v1/products?limit=50 with drover's
# cache on and off. Prints req/s, p99, CPU per request, errors, and the
# transaction retries drover counted (`db_transaction_retries`). See
# bench/README.md.
#
#   bash bench/orders.sh                   # ~1 minute plus the build
#   DURATION=3s WARMUP=1s bash bench/orders.sh
#
# Knobs (environment variables, defaults in brackets):
#   DURATION [10s]   length of each measured wrk run
#   WARMUP [2s]      unmeasured wrk run before each test (0 = none)
#   CONNS [64]       wrk connections
#   THREADS [1]      wrk threads
#   PRODUCTS [1000]  products of the low-contention run
#   SERVER_CPU [0], LOAD_CPU [1]   drover (one worker) and wrk are pinned there
#   PG_HOST [127.0.0.1], PG_PORT [5432], PG_USER [root], PG_ADMIN_DB [test]
#                    PostgreSQL (trust auth); one database per run is
#                    created there and dropped at the end
#   SKIP_BUILD [0], DROVER_BIN, DROVER_ARGS, TARGET_DIR, CARGO_LOCK, WAIT_TRIES
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
PRODUCTS=${PRODUCTS:-1000}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-root}
PG_ADMIN_DB=${PG_ADMIN_DB:-test}
# Plenty of stock: the runs measure placing orders, not refusing them.
STOCK=1000000000

bench_cleanup_init drover-orders-bench

command -v wrk >/dev/null || apt_install wrk
for tool in curl taskset pgrep awk sed psql; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
bench_preflight
psql_admin 'SELECT 1' >/dev/null || die "PostgreSQL is not reachable at $PG_USER@$PG_HOST:$PG_PORT/$PG_ADMIN_DB"

if [[ $SKIP_BUILD != 1 ]]; then
    log "+ flock $CARGO_LOCK cargo build --release (in $ROOT)"
    (cd "$ROOT" && flock "$CARGO_LOCK" cargo build --release --target-dir "$TARGET_DIR") ||
        die "drover did not build; SKIP_BUILD=1 uses the binary already built"
fi
[[ -x $DROVER_BIN ]] || die "no drover binary at $DROVER_BIN"

declare -A RPS=() P50=() P99=() ERRS=() REQS=() CPU_US=() RETRIES=() COMMITS=()
ROWS=()
CUR_DB=""
RAW=$TARGET_DIR/bench/orders-last-run
mkdir -p "$RAW"
rm -f "$RAW"/*.txt

field() { sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" <<<"$2" | head -n 1; }

# The application counter NAME summed over the worker slots, from drover's
# /metrics (the admin listener).
metric() {
    local admin
    admin=$(sed -n 's/.*"admin"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$WORK/$SERVER_NAME.ready")
    [[ -n $admin ]] || { echo n/a; return; }
    # drover_app_events_total{slot="0",name="db_transaction_retries"} 3
    curl -sS --max-time 5 "http://$admin/metrics" |
        awk -v n="name=\"$1\"" '/^drover_app_events_total[{]/ && index($0, n) { s += $NF } END { print s + 0 }'
}

# measure key path [wrk options...]; the script's own arguments (after the
# URL, behind `--`) come from SCRIPT_ARGS.
SCRIPT_ARGS=()
measure() {
    local key=$1 path=$2
    shift 2
    local url="http://$SRV_ADDR$path" out rc=0 t0 t1 r0 r1 c0 c1
    if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
        taskset -c "$LOAD_CPU" wrk -t "$THREADS" -c "$CONNS" -d "$WARMUP" "$@" "$url" "${SCRIPT_ARGS[@]}" >/dev/null 2>&1 || true
    fi
    log "  $key: wrk -t$THREADS -c$CONNS -d$DURATION $path"
    r0=$(metric db_transaction_retries) c0=$(metric db_transactions_committed)
    t0=$(cpu_ticks "${SRV_PIDS[@]}")
    out=$(taskset -c "$LOAD_CPU" wrk -t "$THREADS" -c "$CONNS" -d "$DURATION" --latency "$@" "$url" "${SCRIPT_ARGS[@]}" 2>&1) || rc=$?
    t1=$(cpu_ticks "${SRV_PIDS[@]}")
    r1=$(metric db_transaction_retries) c1=$(metric db_transactions_committed)
    printf '%s\n' "$out" >"$RAW/${key//\//-}.txt"
    ((rc == 0)) || log "warning: wrk exited with status $rc"
    parse_wrk "$key" "$out"
    CPU_US[$key]=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${REQS[$key]}" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "n/a" }')
    RETRIES[$key]=$(awk -v a="$r0" -v b="$r1" 'BEGIN { if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/) print b - a; else print "n/a" }')
    COMMITS[$key]=$(awk -v a="$c0" -v b="$c1" 'BEGIN { if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/) print b - a; else print "n/a" }')
    ROWS+=("$key")
    log "    -> ${RPS[$key]} req/s, p99 ${P99[$key]} ms, ${CPU_US[$key]} us CPU/req, ${ERRS[$key]} errors, ${RETRIES[$key]} retries / ${COMMITS[$key]} commits"
}

run_server() { # name cache(true|false)
    SERVER_NAME=$1
    local db=drover_orders_bench_$$_$1 res status body token first="" last="" i
    psql_admin "CREATE DATABASE \"$db\"" >/dev/null || die "could not create database $db"
    DBS_CREATED+=("$db")
    CUR_DB=$db
    local url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$db"
    start_drover "$1" "$url" DROVER_CACHE__ENABLED="$2" DROVER_SERVER__ADMIN_LISTEN=127.0.0.1:0
    # The first administrator comes from the CLI.
    printf 'bench admin password\n' | "$DROVER_BIN" user create --email admin@example.com --name Admin --admin \
        --password-stdin --database-url "$url" --data-dir "$WORK/$1" >/dev/null ||
        die "could not create the bench administrator"
    res=$(http POST /v1/auth/login '{"email":"admin@example.com","password":"bench admin password"}')
    status=${res%%	*} body=${res#*	}
    [[ $status == 200 ]] || die "login answered $status: $body"
    token=$(field access_token "$body")
    log "   creating $PRODUCTS products and 1 hot product"
    for ((i = 0; i <= PRODUCTS; i++)); do
        res=$(http POST /v1/products "{\"sku\":\"SKU-$i\",\"name\":\"Product $i\",\"price\":{\"amount\":1999,\"currency\":\"EUR\"},\"stock\":$STOCK}" "$token")
        status=${res%%	*} body=${res#*	}
        [[ $status == 201 ]] || die "creating a product answered $status: $body"
        ((i == 0)) && first=$(field id "$body")
        last=$(field id "$body")
    done
    local hot=$last
    last=$((last - 1))
    # One order by hand, checked, before any load.
    res=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "http://$SRV_ADDR/v1/orders" -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/json' -H "Idempotency-Key: check-$$" --data-binary "{\"items\":[{\"product_id\":$first,\"quantity\":1}]}")
    [[ $res == 201 ]] || die "a first order answered $res"
    # With the cache on, every order also drops the cached inventory
    # summary everywhere (Redis and the other workers): the difference
    # between the two servers' order rows is that invalidation's cost.
    SCRIPT_ARGS=(-- "$token" "$first" "$last")
    measure "orders/$PRODUCTS-products/cache-$2" /v1/orders -s "$BENCH_DIR/orders.lua"
    SCRIPT_ARGS=(-- "$token" "$hot" "$hot")
    measure "orders/1-product/cache-$2" /v1/orders -s "$BENCH_DIR/orders.lua"
    SCRIPT_ARGS=()
    measure "products?limit=50/cache-$2" "/v1/products?limit=50" -H "Authorization: Bearer $token"
    stop_server "$1" "$SRV_PID"
    drop_db "$db"
    CUR_DB=""
}

log "drover orders bench: DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS THREADS=$THREADS; drover --workers 1 on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU"
run_server cache-on true
run_server cache-off false

{
    echo
    echo "drover orders bench  $(date -u '+%Y-%m-%d %H:%M:%SZ')  git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')  $(nproc) CPUs  load avg $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "PostgreSQL $PG_HOST:$PG_PORT; drover --workers 1 pinned to CPU $SERVER_CPU; wrk -t $THREADS -c $CONNS -d $DURATION (warm-up $WARMUP) on CPU $LOAD_CPU"
    echo
    printf '%-34s %10s %9s %9s %11s %7s %9s %9s\n' test "req/s" "p50 ms" "p99 ms" "CPU us/req" errors retries commits
    for key in "${ROWS[@]}"; do
        printf '%-34s %10s %9s %9s %11s %7s %9s %9s\n' "$key" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" "${CPU_US[$key]}" \
            "${ERRS[$key]}" "${RETRIES[$key]}" "${COMMITS[$key]}"
    done
    echo "CPU us/req: drover's supervisor and worker (PostgreSQL's own CPU is not included)."
    echo "retries: transactions run again after a serialization failure or deadlock, out of commits in the same window."
    echo "errors: non-2xx answers plus socket errors. The product list is not cached (every order changes stock):"
    echo "cache-on and cache-off list the same path, measured to show it."
} | tee "$RAW/report.txt"

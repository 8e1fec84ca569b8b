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
#   - /healthz p99 (oha on LOAD_CPU, open loop at HEALTH_RATE) alone, then
#     while CLIENTS curl processes download DOWNLOAD_MB brotli-compressed
#     reports over and over (the worker restarted with reports.max_running =
#     CLIENTS): once with the downloading side (curls and database backends)
#     in the idle class and an idle cpu cgroup (root) on LOAD_CPU, so that only the worker's own behaviour
#     shows, and once with it at normal priority (see `beside` below).
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
#   DOWNLOAD_ENCODING [br]   what those clients accept (identity, gzip, zstd)
#   IDLE_CGROUP [auto]  the loaded worker's worker.idle_cgroup: auto (a
#                      cgroup v1 cpu directory of the script's own, removed at
#                      exit, when run as root with cpu.idle available; else
#                      none), none, or a directory
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
DOWNLOAD_MB=${DOWNLOAD_MB:-10}
IDLE_CGROUP=${IDLE_CGROUP:-auto}
DOWNLOAD_ENCODING=${DOWNLOAD_ENCODING:-br}
HEALTH_RATE=${HEALTH_RATE:-200}
HEALTH_SECONDS=${HEALTH_SECONDS:-10}
OHA=${OHA:-oha}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-root}
PG_ADMIN_DB=${PG_ADMIN_DB:-test}
CUR_DB=""

bench_cleanup_init drover-reports-bench
for tool in curl taskset chrt pgrep psql awk; do
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

# loop_ticks: CPU time (user + system, clock ticks) of the worker's event
# loop, its main thread, so far; loop_busy t0 t1: that as a percentage of
# HEALTH_SECONDS.
loop_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$worker/task/$worker/stat"; }
loop_busy() { awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" -v s="$HEALTH_SECONDS" 'BEGIN { printf "%.1f", (b - a) / hz / s * 100 }'; }

# beside name isolate: /healthz p99 while CLIENTS curls download brotli
# reports over and over, the curls on LOAD_CPU. With isolate=1 the curls
# and the database backends serving them run there in the idle class
# (chrt --idle) and in a cpu cgroup with cpu.idle = 1 (LOAD_CGROUP), so
# that neither oha (on LOAD_CPU) nor the worker (on SERVER_CPU) waits for a
# CPU behind them: in production the clients and the database are other
# machines, and the question is whether the worker's event loop keeps
# answering. The idle class alone is not enough where session autogroups
# are on (most distributions): PostgreSQL's backends, idle-class inside
# their server's autogroup, still compete as one normal-weight group at the
# top level, and a scheduler trace showed oha waiting up to 45 ms behind
# them, which /healthz's p99 then counted. With 0 they run at normal
# priority, the backends wherever the kernel puts them: the whole 2-core
# box's view. Sets BESIDE[name] to "p99 ok-downloads other-downloads".
LOAD_CGROUP=""
load_cgroup() { # LOAD_CGROUP: an idle cpu cgroup for the isolated load, made once
    [[ -n $LOAD_CGROUP ]] && return 0
    cpu_cgroup drover-reports-load
    LOAD_CGROUP=$CPU_CGROUP
    [[ -n $LOAD_CGROUP ]] || return 0
    if [[ -e $LOAD_CGROUP/cpu.idle ]]; then
        echo 1 >"$LOAD_CGROUP/cpu.idle"
    elif [[ -e $LOAD_CGROUP/cpu.shares ]]; then
        echo 2 >"$LOAD_CGROUP/cpu.shares"
    else
        echo 1 >"$LOAD_CGROUP/cpu.weight"
    fi
}
isolate_pid() { # pid: onto LOAD_CPU, in the idle class and LOAD_CGROUP
    taskset -p -c "$LOAD_CPU" "$1" >/dev/null && chrt --idle -p 0 "$1"
    [[ -z $LOAD_CGROUP ]] || echo "$1" >"$LOAD_CGROUP/cgroup.procs"
}
declare -A BESIDE
beside() {
    local name=$1 isolate=$2 stop_file=$WORK/$1.stop downloaded=$WORK/$1.count pids=()
    rm -f "$stop_file"
    : >"$downloaded"
    [[ $isolate == 0 ]] || load_cgroup
    for ((c = 0; c < CLIENTS; c++)); do
        (
            # The loop itself too, and so every curl it starts.
            taskset -p -c "$LOAD_CPU" "$BASHPID" >/dev/null
            [[ $isolate == 1 ]] && isolate_pid "$BASHPID"
            while [[ ! -e $stop_file ]]; do
                code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Accept-Encoding: $DOWNLOAD_ENCODING" \
                    -H "Authorization: Bearer $TOKEN" "http://$SRV_ADDR/v1/reports/orders?to=$until" || echo 000)
                echo "$code" >>"$downloaded"
            done
        ) &
        pids+=("$!")
    done
    if [[ $isolate == 1 ]]; then
        # Each report has a connection of its own, so new backends keep
        # coming: moved as they appear (their process title names the
        # database; pgrep reads /proc, no query needed).
        (
            isolate_pid "$BASHPID"
            declare -A seen=()
            while [[ ! -e $stop_file ]]; do
                for pid in $(pgrep -f "postgres: .* $CUR_DB " || true); do
                    [[ -z ${seen[$pid]:-} ]] || continue
                    isolate_pid "$pid" && seen[$pid]=1
                done
                sleep 0.05
            done
        ) >/dev/null 2>&1 &
        pids+=("$!")
    fi
    STARTED+=("${pids[@]}")
    sleep 2
    local p99 t0 t1
    t0=$(loop_ticks)
    p99=$(health_p99 "$name")
    t1=$(loop_ticks)
    touch "$stop_file"
    # The clients finish the download they are in, then stop.
    wait "${pids[@]}" 2>/dev/null || true
    if [[ $isolate == 1 && -n $LOAD_CGROUP ]]; then
        # The pool's backends live on into the next run: back to normal.
        local pid
        for pid in $(cpu_cgroup_empty "$LOAD_CGROUP"); do
            chrt --other -p 0 "$pid" 2>/dev/null || true
        done
    fi
    BESIDE[$name]="$p99 $(grep -c '^200$' "$downloaded" || true) $(grep -vc '^200$' "$downloaded" || true) $(loop_busy "$t0" "$t1")"
    log "   $name: p99 $p99 ms; downloads complete, not 200, event loop busy %: ${BESIDE[$name]#* }"
}

# The worker's idle-class threads in an idle cgroup of their own
# (worker.idle_cgroup), where this machine allows it: see config/default.toml.
if [[ $IDLE_CGROUP == auto ]]; then
    IDLE_CGROUP=none
    if [[ -e /sys/fs/cgroup/cpu/cpu.idle && $(id -u) == 0 ]]; then
        IDLE_CGROUP=/sys/fs/cgroup/cpu/drover-reports-bench-idle-$$
        # The worker makes it; removed at exit once the worker is gone.
        cpu_cgroup_track "$IDLE_CGROUP"
    fi
fi
idle_env=()
[[ $IDLE_CGROUP == none ]] || idle_env=(DROVER_WORKER__IDLE_CGROUP="$IDLE_CGROUP")
start_drover reports-load "$url" DROVER_REPORTS__MAX_RUNNING="$CLIENTS" \
    DROVER_DATABASE__PG_POOL_SIZE=$((CLIENTS + 4)) "${idle_env[@]}"
worker=${SRV_PIDS[1]}
# A new data directory, so new signing keys: log in again.
login=$(http POST /v1/auth/login '{"email":"admin@bench.example","password":"bench password"}')
TOKEN=$(sed -n 's/.*"access_token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' <<<"$login")
[[ -n $TOKEN ]] || die "no token: $login"
# Rows created in the first N milliseconds: about DOWNLOAD_MB of CSV (74 bytes a row).
rows_per=$((DOWNLOAD_MB * 1000000 / 74))
until=$(date -u -d "@$(((1700000000000 + rows_per) / 1000))" +%Y-%m-%dT%H:%M:%SZ)
log "== /healthz p99 alone (oha -q $HEALTH_RATE for ${HEALTH_SECONDS}s on CPU $LOAD_CPU)"
alone=$(health_p99 health-alone)
log "   $alone ms"
log "== the same beside $CLIENTS clients downloading ~$DOWNLOAD_MB MB CSV reports (to=$until) brotli-encoded"
beside isolated 1
beside shared 0
stop_server reports-load "$SRV_PID"

printf '\ndrover reports bench: 1 worker on CPU %s, curl on CPU %s, %d orders on PostgreSQL\n\n' \
    "$SERVER_CPU" "$LOAD_CPU" "$ROWS"
printf '%-14s %9s %12s %8s %9s %10s %10s %9s\n' format rows bytes seconds MB/s "RSS MiB" "peak MiB" growth
for name in csv ndjson csv-gzip csv-br; do printf '%s\n' "${FIG[$name]}"; done
printf '\nslow client (%s/s for %s s): RSS %s MiB before, peak %s MiB; the query stopped %s after it hung up\n' \
    "$SLOW_RATE" "$SLOW_SECONDS" "$before" "$slow_peak" "$gone"
printf '/healthz p99 at %s/s alone: %s ms (worker.idle_cgroup: %s)\n' "$HEALTH_RATE" "$alone" "$IDLE_CGROUP"
for name in isolated shared; do
    [[ -n ${BESIDE[$name]:-} ]] || continue
    read -r p99 ok other busy <<<"${BESIDE[$name]}"
    printf '  beside %s clients downloading %s MB reports (Accept-Encoding: %s), the load %s: %s ms (%s downloads done, %s not 200; the event loop busy %s%% of the time); ratio %s\n' \
        "$CLIENTS" "$DOWNLOAD_MB" "$DOWNLOAD_ENCODING" \
        "$([[ $name == isolated ]] && echo 'in the idle class on CPU '"$LOAD_CPU" || echo 'at normal priority')" \
        "$p99" "$ok" "$other" "$busy" "$(ratio "$p99" "$alone")"
done
printf 'goals: growth < 16 MiB for 1,000,000 rows; /healthz p99 ratio <= 2 (the load isolated)\n'

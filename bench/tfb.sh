#!/usr/bin/env bash
# The TechEmpower database tests (db, queries, fortunes, updates,
# cached-queries) on PostgreSQL: drover beside two reference servers
# written the way their communities write them, on the same database, in
# interleaved rounds so that machine drift cancels out:
#   - axum-tfb: axum with a deadpool-postgres pool, one checkout per request
#     (bench/axum-tfb);
#   - fastify: Fastify with pg's Pool under node:cluster (bench/fastify-tfb).
# First one worker each, pinned to SERVER_CPU, with wrk on LOAD_CPU; then
# every server with ALL_WORKERS workers, unpinned. Prints requests/s, p99
# and server CPU per request, and drover's ratios against the goals of
# issue 14. See bench/README.md.
#
#   bash bench/tfb.sh                        # ~6 minutes plus the builds
#   ROUNDS=1 DURATION=3s bash bench/tfb.sh   # a quick look
#
# Needs wrk (installed with apt-get if missing), node and npm (Node.js 20
# or later; `npm ci` installs Fastify and pg into bench/fastify-tfb), psql,
# and PostgreSQL (trust auth) where PG_* say.
#
# Knobs (environment variables, defaults in brackets):
#   DURATION [5s]     length of each measured wrk run
#   WARMUP [2s]       unmeasured wrk run before each server's first run of a test
#   ROUNDS [3]        interleaved rounds; the report gives per-round medians
#   CONNS [64]        wrk connections (pinned part)
#   ALL_WORKERS [nproc]  workers of each server in the second part (0 skips it)
#   ALL_CONNS [256], ALL_THREADS [2]  wrk in the second part
#   TESTS ["db queries fortunes updates cached-queries"]
#   N [20]            queries per request for queries, updates, cached-queries
#   PG_HOST [127.0.0.1], PG_PORT [5432], PG_USER [root], PG_ADMIN_DB [test]
#   SERVER_CPU [0], LOAD_CPU [1], SKIP_BUILD [0], TARGET_DIR, CARGO_LOCK, WAIT_TRIES
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
ALL_WORKERS=${ALL_WORKERS:-$(nproc)}
ALL_CONNS=${ALL_CONNS:-256}
ALL_THREADS=${ALL_THREADS:-2}
TESTS=${TESTS:-"db queries fortunes updates cached-queries"}
N=${N:-20}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-root}
PG_ADMIN_DB=${PG_ADMIN_DB:-test}
AXUM_BIN=$BENCH_TARGET_DIR/release/axum-tfb
FASTIFY_DIR=$BENCH_DIR/fastify-tfb
SERVERS=(drover axum fastify)

bench_cleanup_init drover-tfb-bench

command -v wrk >/dev/null || apt_install wrk
for tool in curl taskset pgrep awk psql node npm; do
    command -v "$tool" >/dev/null || die "$tool is required (node and npm: apt-get install -y nodejs npm)"
done
bench_preflight
psql_admin 'SELECT 1' >/dev/null || die "PostgreSQL is not reachable at $PG_USER@$PG_HOST:$PG_PORT/$PG_ADMIN_DB"

if [[ $SKIP_BUILD != 1 ]]; then
    log "+ flock $CARGO_LOCK cargo build --release (in $ROOT)"
    (cd "$ROOT" && flock "$CARGO_LOCK" cargo build --release --target-dir "$TARGET_DIR") || die "drover did not build"
    cargo_build "$BENCH_DIR/axum-tfb/Cargo.toml" "$BENCH_TARGET_DIR" || die "axum-tfb did not build"
fi
if [[ ! -d $FASTIFY_DIR/node_modules/fastify ]]; then
    log "+ (cd bench/fastify-tfb && npm ci --no-audit --no-fund)"
    (cd "$FASTIFY_DIR" && npm ci --no-audit --no-fund >&2) || die "npm ci failed in $FASTIFY_DIR"
fi
for bin in "$DROVER_BIN" "$AXUM_BIN"; do [[ -x $bin ]] || die "no binary at $bin"; done

DB=drover_tfb_bench_$$
psql_admin "CREATE DATABASE \"$DB\"" >/dev/null || die "could not create database $DB"
DBS_CREATED+=("$DB")
URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB"
log "+ drover bench setup --database-url $URL"
"$DROVER_BIN" bench setup --database-url "$URL" --data-dir "$WORK/setup" --log-level warn >&2 ||
    die "drover bench setup failed"

free_port() {
    local port
    for port in $(seq "$1" $(($1 + 200))); do port_in_use "$port" || { echo "$port"; return; }; done
    die "no free port from $1"
}

declare -A PID=() ADDR=()
# start_servers workers pin(cpu list or ""): every server with that many workers
start_servers() {
    local workers=$1 pin=$2 port prefix=()
    [[ -n $pin ]] && prefix=(taskset -c "$pin")
    local ready=$WORK/drover.ready
    rm -f "$ready"
    "${prefix[@]}" "$DROVER_BIN" serve --listen 127.0.0.1:0 --workers "$workers" --ready-file "$ready" \
        --data-dir "$WORK/drover" --database-url "$URL" --admin-listen "" --control-socket "$WORK/drover.sock" \
        --log-level warn </dev/null >"$WORK/drover.log" 2>&1 &
    PID[drover]=$!
    STARTED+=("${PID[drover]}")
    wait_ready drover "${PID[drover]}" "$ready" "$WORK/drover.log"
    ADDR[drover]=$READY_ADDR
    port=$(free_port 18190)
    "${prefix[@]}" "$AXUM_BIN" "127.0.0.1:$port" "$URL" "$workers" </dev/null >"$WORK/axum.log" 2>&1 &
    PID[axum]=$!
    STARTED+=("${PID[axum]}")
    ADDR[axum]=127.0.0.1:$port
    port=$(free_port 18390)
    (cd "$FASTIFY_DIR" && PORT=$port DATABASE_URL=$URL WORKERS=$workers exec "${prefix[@]}" node server.js) \
        </dev/null >"$WORK/fastify.log" 2>&1 &
    PID[fastify]=$!
    STARTED+=("${PID[fastify]}")
    ADDR[fastify]=127.0.0.1:$port
    local s i
    for s in "${SERVERS[@]}"; do
        for ((i = 0; i < WAIT_TRIES; i++)); do
            curl -sf -o /dev/null "http://${ADDR[$s]}/bench/db" && break
            kill -0 "${PID[$s]}" 2>/dev/null || { server_log_tail "$WORK/$s.log"; die "$s exited"; }
            sleep 0.1
        done
        ((i < WAIT_TRIES)) || { server_log_tail "$WORK/$s.log"; die "$s did not answer /bench/db"; }
        check_answers "$s"
    done
    log "   drover ${ADDR[drover]} (pid ${PID[drover]}), axum ${ADDR[axum]} (pid ${PID[axum]}), fastify ${ADDR[fastify]} (pid ${PID[fastify]})"
}

# Every server answers every test with the right shape before any load.
check_answers() {
    local s=$1 body
    body=$(curl -sf "http://${ADDR[$s]}/bench/queries?queries=3") || die "$s: queries failed"
    [[ $(grep -o '"randomNumber"' <<<"$body" | wc -l) == 3 ]] || die "$s: queries answered $body"
    body=$(curl -sf "http://${ADDR[$s]}/bench/fortunes") || die "$s: fortunes failed"
    [[ $body == *"Additional fortune added at request time."* && $body != *"<script>"* ]] || die "$s: fortunes answered $body"
    body=$(curl -sf "http://${ADDR[$s]}/bench/updates?queries=2") || die "$s: updates failed"
    [[ $(grep -o '"randomNumber"' <<<"$body" | wc -l) == 2 ]] || die "$s: updates answered $body"
    body=$(curl -sf "http://${ADDR[$s]}/bench/cached-queries?count=2") || die "$s: cached-queries failed"
    [[ $(grep -o '"randomNumber"' <<<"$body" | wc -l) == 2 ]] || die "$s: cached-queries answered $body"
}

stop_servers() {
    local s
    for s in "${SERVERS[@]}"; do
        STOP_EXPECT_ZERO='drover' STOP_LOG_ERRORS=0 stop_server "$s" "${PID[$s]}"
    done
}

path_of() {
    case $1 in
    db) echo /bench/db ;;
    queries) echo "/bench/queries?queries=$N" ;;
    fortunes) echo /bench/fortunes ;;
    updates) echo "/bench/updates?queries=$N" ;;
    cached-queries) echo "/bench/cached-queries?count=$N" ;;
    *) die "unknown test $1" ;;
    esac
}

declare -A RPS=() P50=() P99=() ERRS=() REQS=() SAMPLES_RPS=() SAMPLES_P99=() SAMPLES_CPU=() WARMED=()
# measure part server test: one wrk run; appends to the samples of part/server/test
measure() {
    local part=$1 s=$2 t=$3 key="$1/$2/$3" url pids out rc=0 t0 t1 wrk=(wrk) threads=1 conns=$CONNS
    url="http://${ADDR[$s]}$(path_of "$t")"
    if [[ $part == pinned ]]; then wrk=(taskset -c "$LOAD_CPU" wrk); else threads=$ALL_THREADS conns=$ALL_CONNS; fi
    if [[ -z ${WARMED[$key]:-} && $WARMUP != 0 && $WARMUP != 0s ]]; then
        "${wrk[@]}" -t "$threads" -c "$conns" -d "$WARMUP" "$url" >/dev/null 2>&1 || true
        WARMED[$key]=1
    fi
    mapfile -t pids < <(proc_tree "${PID[$s]}")
    t0=$(cpu_ticks "${pids[@]}")
    out=$("${wrk[@]}" -t "$threads" -c "$conns" -d "$DURATION" --latency "$url" 2>&1) || rc=$?
    t1=$(cpu_ticks "${pids[@]}")
    ((rc == 0)) || log "warning: wrk exited with status $rc for $key"
    parse_wrk "$key" "$out"
    local cpu
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${REQS[$key]}" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "n/a" }')
    SAMPLES_RPS[$key]+="${RPS[$key]} "
    SAMPLES_P99[$key]+="${P99[$key]} "
    SAMPLES_CPU[$key]+="$cpu "
    ((ERRS[$key] == 0)) || log "warning: $key: ${ERRS[$key]} errors (non-2xx or socket)"
    log "    $s $t: ${RPS[$key]} req/s, p99 ${P99[$key]} ms, $cpu us CPU/req"
}

median() { tr ' ' '\n' <<<"$1" | grep -E '^[0-9.]+$' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

run_part() { # part workers pin
    log "== $1: every server with $2 worker(s)${3:+, pinned to CPU $3}; wrk ${3:+on CPU $LOAD_CPU}"
    start_servers "$2" "$3"
    local round t s
    for ((round = 1; round <= ROUNDS; round++)); do
        log "  round $round/$ROUNDS"
        for t in $TESTS; do
            for s in "${SERVERS[@]}"; do measure "$1" "$s" "$t"; done
        done
    done
    stop_servers
}

run_part pinned 1 "$SERVER_CPU"
((ALL_WORKERS > 0)) && run_part all "$ALL_WORKERS" ""

goal() { # test vs -> the goal ratio of issue 14
    case "$1/$2" in
    db/axum) echo 1.6 ;; db/fastify) echo 4 ;;
    queries/axum) echo 2.5 ;; queries/fastify) echo 6 ;;
    fortunes/axum) echo 1.5 ;; fortunes/fastify) echo 3 ;;
    updates/axum) echo 1.5 ;; updates/fastify) echo 3 ;;
    cached-queries/axum) echo 1.3 ;; cached-queries/fastify) echo 4 ;;
    esac
}
verdict_min() { awk -v v="$1" -v g="$2" 'BEGIN { if (v !~ /^[0-9.]+$/ || g == "") print ""; else if (v + 0 >= g + 0) print "ok"; else print "BELOW GOAL" }'; }

report() {
    local part t s key
    echo
    echo "drover TechEmpower database tests  $(date -u '+%Y-%m-%d %H:%M:%SZ')  git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')  $(nproc) CPUs  load avg $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "PostgreSQL $PG_HOST:$PG_PORT; $ROUNDS interleaved rounds of $DURATION per server and test; medians; N=$N"
    for part in pinned all; do
        [[ $part == all && $ALL_WORKERS == 0 ]] && continue
        echo
        if [[ $part == pinned ]]; then
            echo "one worker each, pinned to CPU $SERVER_CPU; wrk -t1 -c$CONNS on CPU $LOAD_CPU (per core):"
        else
            echo "$ALL_WORKERS workers each, unpinned; wrk -t$ALL_THREADS -c$ALL_CONNS:"
        fi
        printf '  %-15s %-8s %10s %9s %11s   %-24s %-24s\n' test server "req/s" "p99 ms" "CPU us/req" "drover / axum (goal)" "drover / fastify (goal)"
        for t in $TESTS; do
            local d_rps d_cpu
            d_rps=$(median "${SAMPLES_RPS[$part/drover/$t]:-}")
            d_cpu=$(median "${SAMPLES_CPU[$part/drover/$t]:-}")
            for s in "${SERVERS[@]}"; do
                key=$part/$s/$t
                local rps p99 cpu ra="" rf=""
                rps=$(median "${SAMPLES_RPS[$key]:-}")
                p99=$(median "${SAMPLES_P99[$key]:-}")
                cpu=$(median "${SAMPLES_CPU[$key]:-}")
                if [[ $s == drover ]]; then
                    local a f
                    a=$(ratio "$d_rps" "$(median "${SAMPLES_RPS[$part/axum/$t]:-}")")
                    f=$(ratio "$d_rps" "$(median "${SAMPLES_RPS[$part/fastify/$t]:-}")")
                    ra="$a (>= $(goal "$t" axum))"
                    rf="$f (>= $(goal "$t" fastify))"
                    # The goals are per core: judged on the pinned part only.
                    if [[ $part == pinned ]]; then
                        ra+=" $(verdict_min "$a" "$(goal "$t" axum)")"
                        rf+=" $(verdict_min "$f" "$(goal "$t" fastify)")"
                    fi
                fi
                printf '  %-15s %-8s %10s %9s %11s   %-24s %-24s\n' "$t" "$s" "$rps" "$p99" "$cpu" "$ra" "$rf"
            done
        done
        if [[ $part == pinned ]]; then
            for t in db queries; do
                [[ " $TESTS " == *" $t "* ]] || continue
                local r
                r=$(ratio "$(median "${SAMPLES_CPU[pinned/drover/$t]:-}")" "$(median "${SAMPLES_CPU[pinned/axum/$t]:-}")")
                echo "  $t: drover CPU per request / axum's = $r (goal <= 0.6) $(verdict_max "$r" 0.6)"
            done
        fi
    done
    echo
    echo "CPU us/req: the server's own processes (PostgreSQL's CPU is not included). Goals are per core (the pinned part)."
}

mkdir -p "$BENCH_TARGET_DIR"
report | tee "$BENCH_TARGET_DIR/tfb-report.txt"

#!/usr/bin/env bash
# drover users/auth benchmark: authenticated reads (GET /v1/users/{id} and
# GET /v1/users/me with a bearer token) on PostgreSQL with shared pipelined
# clients, on PostgreSQL with one pool checkout per request, and on SQLite;
# then /v1/users/me again while a second wrk runs a login storm (argon2id
# hashing on the worker's blocking pool). See bench/README.md.
#
#   bash bench/users.sh                 # full run (~1.5 min plus the build)
#   DURATION=3s WARMUP=1s bash bench/users.sh
#   SKIP_PG=1 bash bench/users.sh       # SQLite only
#
# Knobs (environment variables, defaults in brackets):
#   DURATION [10s]    length of each measured wrk run
#   WARMUP [2s]       unmeasured wrk run before each read test (0 = none)
#   CONNS [64]        wrk connections for the reads
#   THREADS [1]       wrk threads for the reads
#   STORM_CONNS [8]   wrk connections of the login storm
#   STORM_LEAD [1]    seconds the storm runs before and after the measured read
#   SERVER_CPU [0]    CPU drover (one worker) is pinned to
#   LOAD_CPU [1]      CPU the read wrk is pinned to
#   STORM_CPU [LOAD_CPU]  CPU the login-storm wrk is pinned to
#   STORM_GOAL [2.0]  goal for p99 with storm / p99 without (at most)
#   SKIP_PG, SKIP_SQLITE, SKIP_STORM, SKIP_BUILD [0]  set to 1 to skip
#   PG_HOST [127.0.0.1], PG_PORT [5432], PG_USER [root], PG_ADMIN_DB [test]
#                     PostgreSQL server (trust auth); the script creates one
#                     database per server there and drops it at the end
#   DROVER_BIN [TARGET_DIR/release/drover], DROVER_ARGS [] extra `serve` args
#   TARGET_DIR [<repo>/target]
#   CARGO_LOCK [/tmp/drover-cargo.lock]  the cargo build runs under flock on it
#   WAIT_TRIES [100]  tries (0.1 s apart) for a server to come up
#   DROVER_CACHE__ENABLED [false]  drover's user cache; off so reads hit the database
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh" # the shared knobs (TARGET_DIR, CARGO_LOCK, SERVER_CPU, ...), log, die, cleanup, ...

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
STORM_CONNS=${STORM_CONNS:-8}
STORM_LEAD=${STORM_LEAD:-1}
STORM_CPU=${STORM_CPU:-$LOAD_CPU}
STORM_GOAL=${STORM_GOAL:-2.0}
SKIP_PG=${SKIP_PG:-0}
SKIP_SQLITE=${SKIP_SQLITE:-0}
SKIP_STORM=${SKIP_STORM:-0}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-root}
PG_ADMIN_DB=${PG_ADMIN_DB:-test}
# This script measures reads that go to the database: drover's user cache
# (on by default) would answer them from memory after the first one.
# bench/cache.sh measures the cache. DROVER_CACHE__ENABLED=true overrides.
export DROVER_CACHE__ENABLED=${DROVER_CACHE__ENABLED:-false}

# The bench user. Plain ASCII without quotes or backslashes: login.lua puts
# them into a JSON body as they are.
BENCH_EMAIL=bench-$$@example.com
BENCH_PASSWORD="correct horse battery staple $$"
BENCH_NAME="Bench User"

# ---------------------------------------------------------------- cleanup --
bench_cleanup_init drover-users-bench # WORK, and a trap that stops every PID in STARTED

# ------------------------------------------------------------ preflight --
command -v wrk >/dev/null || apt_install wrk
for tool in curl taskset pgrep awk sed; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
bench_preflight
(($(nproc) < 2)) && STORM_CPU=$SERVER_CPU

# PostgreSQL: skip those parts, loudly, when it cannot be reached.
PG_STATUS=used
if [[ $SKIP_PG == 1 ]]; then
    PG_STATUS="skipped (SKIP_PG=1)"
elif ! command -v psql >/dev/null; then
    PG_STATUS="skipped (psql not installed)"
elif ! psql_admin 'SELECT 1' >/dev/null 2>"$WORK/psql.err"; then
    PG_STATUS="skipped (unreachable at $PG_USER@$PG_HOST:$PG_PORT/$PG_ADMIN_DB: $(head -n 1 "$WORK/psql.err"))"
fi
if [[ $PG_STATUS != used ]]; then
    log "PostgreSQL $PG_STATUS: the pg-pipelined and pg-checkout parts are skipped"
fi

# ---------------------------------------------------------------- build --
if [[ $SKIP_BUILD != 1 ]]; then
    log "+ flock $CARGO_LOCK cargo build --release (in $ROOT)"
    (cd "$ROOT" && flock "$CARGO_LOCK" cargo build --release --target-dir "$TARGET_DIR") ||
        die "drover did not build; SKIP_BUILD=1 uses the binary already built"
fi
[[ -x $DROVER_BIN ]] || die "no drover binary at $DROVER_BIN"

# ------------------------------------------------------------- helpers --
to_secs() { # wrk duration "10s" / "2m" / "1h" / "10" -> whole seconds
    awk -v v="$1" 'BEGIN {
        if (!match(v, /^[0-9]+/)) { print 10; exit }
        n = substr(v, 1, RLENGTH); u = substr(v, RLENGTH + 1)
        f = (u == "" || u == "s") ? 1 : (u == "m") ? 60 : (u == "h") ? 3600 : 1
        print n * f }'
}

# --------------------------------------------------------- the servers --
SRV_PID="" SRV_ADDR="" SRV_PIDS=() TOKEN="" USER_ID=""

# Register the bench user, log in with curl, keep the token; check that the
# reads answer 200 with the user before any load.
setup_user() {
    local name=$1 res status body
    res=$(http POST /v1/auth/register "{\"email\":\"$BENCH_EMAIL\",\"password\":\"$BENCH_PASSWORD\",\"name\":\"$BENCH_NAME\"}")
    status=${res%%	*} body=${res#*	}
    [[ $status == 201 ]] || { server_log_tail "$WORK/$name.log"; die "$name: register answered $status: $body"; }
    USER_ID=$(sed -n 's/.*"id":\([0-9][0-9]*\).*/\1/p' <<<"$body")
    [[ -n $USER_ID ]] || die "$name: no id in the register answer: $body"
    res=$(http POST /v1/auth/login "{\"email\":\"$BENCH_EMAIL\",\"password\":\"$BENCH_PASSWORD\"}")
    status=${res%%	*} body=${res#*	}
    [[ $status == 200 ]] || { server_log_tail "$WORK/$name.log"; die "$name: login answered $status: $body"; }
    TOKEN=$(sed -n 's/.*"access_token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' <<<"$body")
    [[ -n $TOKEN ]] || die "$name: no access_token in the login answer: $body"
    local path
    for path in "/v1/users/$USER_ID" /v1/users/me; do
        res=$(http GET "$path" "" "$TOKEN")
        status=${res%%	*} body=${res#*	}
        [[ $status == 200 && $body == *"\"$BENCH_EMAIL\""* ]] ||
            die "$name: GET $path with the token answered $status: $body"
    done
    res=$(http GET /v1/users/me)
    [[ ${res%%	*} == 401 ]] || log "warning: $name: GET /v1/users/me without a token answered ${res%%	*}, expected 401"
    log "   user $USER_ID registered, token of ${#TOKEN} bytes; reads checked"
}

# ------------------------------------------------------------- measure --
declare -A RPS=() P50=() P99=() CPU_US=() PG_US=() ERRS=() REQS=() TICKS=() WALL=() INSTR=() ICOUNT=()
CUR_DB="" # the PostgreSQL database of the server under test ("" for SQLite)

ROWS=()
RAW=$TARGET_DIR/bench/users-last-run
mkdir -p "$RAW"
rm -f "$RAW"/*.txt

# measure name test path [warmup]: wrk GET with the bearer token, pinned to LOAD_CPU
measure() {
    local name=$1 test=$2 path=$3 warm=${4:-$WARMUP} key="$1/$2"
    local args=(-t "$THREADS" -c "$CONNS" --latency -H "Authorization: Bearer $TOKEN")
    local url="http://$SRV_ADDR$path"
    if [[ $warm != 0 && $warm != 0s ]]; then
        taskset -c "$LOAD_CPU" wrk "${args[@]}" -d "$warm" "$url" >/dev/null 2>&1 || true
    fi
    log "  $name $test: wrk -t$THREADS -c$CONNS -d$DURATION GET $path"
    local t0 t1 w0 w1 out rc=0 backends=() pg0=0 pg1=0
    # PostgreSQL's backends for this database: their CPU is the other half of
    # a query's cost. Taken after the warm-up, so the pool is already open.
    mapfile -t backends < <(pg_backends)
    ((${#backends[@]} == 0)) || pg0=$(cpu_ticks "${backends[@]}")
    perf_start "${SRV_PIDS[@]}"
    t0=$(cpu_ticks "${SRV_PIDS[@]}")
    w0=$(now_s)
    out=$(taskset -c "$LOAD_CPU" wrk "${args[@]}" -d "$DURATION" "$url" 2>&1) || rc=$?
    w1=$(now_s)
    t1=$(cpu_ticks "${SRV_PIDS[@]}")
    perf_stop
    ((${#backends[@]} == 0)) || pg1=$(cpu_ticks "${backends[@]}")
    local raw=${test//\//-}
    raw=$RAW/$name-${raw//[\{\}]/}.txt # users/{id} -> NAME-users-id.txt
    printf '%s\n' "$out" >"$raw"
    ((rc == 0)) || log "warning: wrk exited with status $rc (output in $raw)"
    parse_wrk "$key" "$out"
    TICKS[$key]=$((t1 - t0))
    ICOUNT[$key]=$PERF_COUNT
    INSTR[$key]=$(per_req_instr "$PERF_COUNT" "${REQS[$key]}")
    WALL[$key]=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.3f", b - a }')
    if [[ ${REQS[$key]} -gt 0 ]]; then
        CPU_US[$key]=$(awk -v t="${TICKS[$key]}" -v hz="$CLK_TCK" -v n="${REQS[$key]}" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    else
        CPU_US[$key]=n/a
    fi
    PG_US[$key]=-
    if [[ -n $CUR_DB ]]; then
        PG_US[$key]=n/a
        if ((${#backends[@]} > 0)) && [[ ${REQS[$key]} -gt 0 ]]; then
            PG_US[$key]=$(awk -v t=$((pg1 - pg0)) -v hz="$CLK_TCK" -v n="${REQS[$key]}" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
        fi
    fi
    ROWS+=("$key")
    local pg_note=""
    [[ -n $CUR_DB ]] && pg_note=" + ${PG_US[$key]} in ${#backends[@]} PostgreSQL backends"
    log "    -> ${RPS[$key]} req/s, p50/p99 ${P50[$key]}/${P99[$key]} ms, ${CPU_US[$key]} us CPU/req, ${INSTR[$key]} instr/req$pg_note, ${ERRS[$key]} errors"
}

# storm name: GET /v1/users/me measured while a second wrk (its own process,
# pinned to STORM_CPU) logs in over and over. The storm starts STORM_LEAD s
# before the measured run and ends STORM_LEAD s after it.
declare -A STORM_RPS=() STORM_REQS=() STORM_NON2XX=() STORM_SOCKERR=() STORM_P50=() STORM_P99=() STORM_CORE=() STORM_LOGIN_US=() STORM_LOGIN_INSTR=()
storm() {
    local name=$1 key="$1/users/me+storm"
    local secs storm_secs spid sout=$WORK/$name-storm.out
    secs=$(to_secs "$DURATION")
    storm_secs=$((secs + 2 * STORM_LEAD))
    log "  $name login storm: wrk -t1 -c$STORM_CONNS -d${storm_secs}s POST /v1/auth/login (bench/login.lua), on CPU $STORM_CPU"
    taskset -c "$STORM_CPU" wrk -t1 -c "$STORM_CONNS" -d "${storm_secs}s" --latency \
        -s "$BENCH_DIR/login.lua" "http://$SRV_ADDR/v1/auth/login" -- "$BENCH_EMAIL" "$BENCH_PASSWORD" \
        </dev/null >"$sout" 2>&1 &
    spid=$!
    STARTED+=("$spid")
    sleep "$STORM_LEAD"
    kill -0 "$spid" 2>/dev/null || { cat "$sout" >&2; die "the login storm wrk exited early"; }
    measure "$name" users/me+storm /v1/users/me 0
    # Bounded wait for the storm to end on its own (it has its own -d).
    if ! await_exit "$spid" $(((STORM_LEAD + 10) * 10)); then
        log "warning: the login storm wrk (pid $spid) did not end; killing it"
        kill -KILL "$spid" 2>/dev/null || true
    fi
    wait "$spid" 2>/dev/null || log "warning: the login storm wrk exited with an error (output in $RAW/$name-login-storm.txt)"
    cp "$sout" "$RAW/$name-login-storm.txt"
    local out
    out=$(cat "$sout")
    parse_wrk "$name/storm" "$out"
    STORM_RPS[$name]=${RPS[$name/storm]}
    STORM_REQS[$name]=${REQS[$name/storm]}
    STORM_P50[$name]=${P50[$name/storm]}
    STORM_P99[$name]=${P99[$name/storm]}
    STORM_NON2XX[$name]=$(awk '/Non-2xx or 3xx responses:/ { s += $NF } END { print s + 0 }' <<<"$out")
    STORM_SOCKERR[$name]=$(awk '/Socket errors:/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 } END { print s + 0 }' <<<"$out")
    # The CPU figure of the users/me+storm row also pays for the hashing, so it is
    # not a per-read cost. Report how busy the server core was instead, and
    # an estimate of the CPU per login: the window's CPU minus the reads at
    # their no-storm cost, over the logins of the window (storm rate x time).
    STORM_CORE[$name]=$(awk -v t="${TICKS[$key]}" -v hz="$CLK_TCK" -v w="${WALL[$key]}" \
        'BEGIN { if (w > 0) printf "%.0f", t / hz / w * 100; else print "n/a" }')
    STORM_LOGIN_US[$name]=$(awk -v t="${TICKS[$key]}" -v hz="$CLK_TCK" -v w="${WALL[$key]}" \
        -v reads="${REQS[$key]}" -v per="${CPU_US[$name/users/me]:-}" -v lr="${STORM_RPS[$name]}" 'BEGIN {
            if (per !~ /^[0-9.]+$/ || lr !~ /^[0-9.]+$/ || lr * w <= 0) { print "n/a"; exit }
            v = (t / hz * 1e6 - reads * per) / (lr * w)
            if (v <= 0) print "n/a"; else printf "%.0f", v }')
    # The same estimate on instructions.
    STORM_LOGIN_INSTR[$name]=$(awk -v c="${ICOUNT[$key]}" -v w="${WALL[$key]}" -v reads="${REQS[$key]}" \
        -v per="${INSTR[$name/users/me]:-}" -v lr="${STORM_RPS[$name]}" 'BEGIN {
            if (c !~ /^[0-9.]+$/ || per !~ /^[0-9.]+$/ || lr !~ /^[0-9.]+$/ || lr * w <= 0) { print "n/a"; exit }
            v = (c - reads * per) / (lr * w)
            if (v <= 0) print "n/a"; else printf "%.0f", v }')
    CPU_US[$key]="(${STORM_CORE[$name]}%)"
    [[ ${INSTR[$key]} == n/a ]] || INSTR[$key]="(${INSTR[$key]})"
    log "    storm: ${STORM_RPS[$name]} logins/s, p50/p99 ${STORM_P50[$name]}/${STORM_P99[$name]} ms," \
        "${STORM_NON2XX[$name]} non-2xx, ${STORM_SOCKERR[$name]} socket errors; server core ${STORM_CORE[$name]}% busy"
}

# ----------------------------------------------------------------- run --
log "drover users bench: DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS THREADS=$THREADS STORM_CONNS=$STORM_CONNS"
log "drover --workers 1 on CPU $SERVER_CPU, read wrk on CPU $LOAD_CPU, storm wrk on CPU $STORM_CPU; raw wrk output in $RAW"
SERVERS=()

if [[ $PG_STATUS == used ]]; then
    for mode in pipelined checkout; do
        name=pg-$mode
        db=drover_users_bench_$$_$mode
        psql_admin "CREATE DATABASE \"$db\"" >/dev/null || die "could not create database $db"
        DBS_CREATED+=("$db")
        url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$db"
        CUR_DB=$db
        if [[ $mode == pipelined ]]; then
            start_drover "$name" "$url"
        else
            start_drover "$name" "$url" DROVER_DATABASE__PG_PIPELINING=false
        fi
        SERVERS+=("$name")
        setup_user "$name"
        measure "$name" "users/{id}" "/v1/users/$USER_ID"
        if [[ $mode == pipelined && $SKIP_STORM != 1 ]]; then
            measure "$name" users/me /v1/users/me
            storm "$name"
        fi
        stop_server "$name" "$SRV_PID"
        drop_db "$db"
        CUR_DB=""
    done
fi

if [[ $SKIP_SQLITE != 1 ]]; then
    name=sqlite
    start_drover "$name" ""
    SERVERS+=("$name")
    setup_user "$name"
    measure "$name" "users/{id}" "/v1/users/$USER_ID"
    if [[ $SKIP_STORM != 1 ]]; then
        measure "$name" users/me /v1/users/me
        storm "$name"
    fi
    stop_server "$name" "$SRV_PID"
fi

((${#SERVERS[@]} > 0)) || die "nothing was measured (PostgreSQL $PG_STATUS, SKIP_SQLITE=$SKIP_SQLITE)"

# -------------------------------------------------------------- report --
line() { # label value [goal] [verdict]
    printf '  %-66s %7s' "$1" "$2"
    [[ -n ${3:-} ]] && printf '   goal %-7s %s' "$3" "${4:-}"
    printf '\n'
}
sum2() { # a b -> a+b, or n/a
    awk -v a="${1:-}" -v b="${2:-}" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/) print "n/a"; else printf "%.2f", a + b }'
}

report() {
    local key s t r
    echo
    echo "drover users bench  $(date -u '+%Y-%m-%d %H:%M:%SZ')  git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
        " $(nproc) CPUs  load avg $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "drover --workers 1 pinned to CPU $SERVER_CPU; reads: wrk -t $THREADS -c $CONNS -d $DURATION (warm-up $WARMUP) on CPU $LOAD_CPU;" \
        "login storm: wrk -t 1 -c $STORM_CONNS on CPU $STORM_CPU"
    echo "PostgreSQL: $PG_STATUS; drover cache.enabled=$DROVER_CACHE__ENABLED"
    echo
    printf '%-13s %-15s %10s %9s %9s %11s %11s %11s %7s\n' server test "req/s" "p50 ms" "p99 ms" "CPU us/req" "instr/req" "pg us/req" errors
    printf '%-13s %-15s %10s %9s %9s %11s %11s %11s %7s\n' ------------- --------------- ---------- --------- --------- ----------- ----------- ----------- -------
    for key in "${ROWS[@]}"; do
        s=${key%%/*} t=${key#*/}
        printf '%-13s %-15s %10s %9s %9s %11s %11s %11s %7s\n' "$s" "$t" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" \
            "${CPU_US[$key]}" "${INSTR[$key]}" "${PG_US[$key]}" "${ERRS[$key]}"
    done
    echo "CPU us/req and instr/req: drover (supervisor + worker); pg us/req: the PostgreSQL backends of its database (not pinned)."
    echo "instr/req: $PERF_NOTE"
    ((${#STORM_RPS[@]} == 0)) ||
        echo "users/me+storm: the CPU column is how busy drover's core was, in %, and instr/req (in parentheses) includes the hashing."
    if ((${#STORM_RPS[@]} > 0)); then
        echo
        echo "login storms (POST /v1/auth/login, correct credentials, during the users/me+storm run):"
        printf '  %-13s %9s %9s %9s %9s %11s %13s\n' server "logins/s" "logins" "p50 ms" "p99 ms" "non-2xx" "socket errs"
        for s in "${SERVERS[@]}"; do
            [[ -n ${STORM_RPS[$s]:-} ]] || continue
            printf '  %-13s %9s %9s %9s %9s %11s %13s\n' "$s" "${STORM_RPS[$s]}" "${STORM_REQS[$s]}" \
                "${STORM_P50[$s]}" "${STORM_P99[$s]}" "${STORM_NON2XX[$s]}" "${STORM_SOCKERR[$s]}"
        done
        for s in "${SERVERS[@]}"; do
            [[ -n ${STORM_RPS[$s]:-} ]] || continue
            echo "  $s: server core ${STORM_CORE[$s]}% busy during the storm; about ${STORM_LOGIN_US[$s]} us CPU and ${STORM_LOGIN_INSTR[$s]} instructions per login (estimates)"
        done
    fi
    echo
    echo "ratios (same run; for pipelined vs checkout, higher means pipelining wins):"
    if [[ $PG_STATUS == used ]]; then
        r=$(ratio "${RPS[pg-pipelined/users/{id}]:-}" "${RPS[pg-checkout/users/{id}]:-}")
        line "pg pipelined / pg checkout, users/{id} req/s" "$r"
        r=$(ratio "${CPU_US[pg-checkout/users/{id}]:-}" "${CPU_US[pg-pipelined/users/{id}]:-}")
        line "pg checkout / pg pipelined, users/{id} drover CPU us/req" "$r"
        r=$(ratio "$(sum2 "${CPU_US[pg-checkout/users/{id}]:-}" "${PG_US[pg-checkout/users/{id}]:-}")" \
            "$(sum2 "${CPU_US[pg-pipelined/users/{id}]:-}" "${PG_US[pg-pipelined/users/{id}]:-}")")
        line "pg checkout / pg pipelined, users/{id} drover+pg CPU us/req" "$r"
        r=$(ratio "${INSTR[pg-checkout/users/{id}]:-}" "${INSTR[pg-pipelined/users/{id}]:-}")
        line "pg checkout / pg pipelined, users/{id} drover instr/req" "$r"
    fi
    if [[ $PG_STATUS == used && $SKIP_SQLITE != 1 ]]; then
        line "sqlite / pg pipelined, users/{id} req/s" "$(ratio "${RPS[sqlite/users/{id}]:-}" "${RPS[pg-pipelined/users/{id}]:-}")"
        line "pg pipelined / sqlite, users/{id} drover CPU us/req" "$(ratio "${CPU_US[pg-pipelined/users/{id}]:-}" "${CPU_US[sqlite/users/{id}]:-}")"
        line "pg pipelined / sqlite, users/{id} drover instr/req" "$(ratio "${INSTR[pg-pipelined/users/{id}]:-}" "${INSTR[sqlite/users/{id}]:-}")"
        line "pg pipelined / sqlite, users/{id} drover+pg CPU us/req" \
            "$(ratio "$(sum2 "${CPU_US[pg-pipelined/users/{id}]:-}" "${PG_US[pg-pipelined/users/{id}]:-}")" "${CPU_US[sqlite/users/{id}]:-}")"
    fi
    for s in "${SERVERS[@]}"; do
        [[ -n ${STORM_RPS[$s]:-} ]] || continue
        r=$(ratio "${P99[$s/users/me+storm]:-}" "${P99[$s/users/me]:-}")
        line "$s users/me p99, storm / none (${P99[$s/users/me+storm]} / ${P99[$s/users/me]} ms)" "$r" "<= $STORM_GOAL" "$(verdict_max "$r" "$STORM_GOAL")"
        line "$s users/me req/s, storm / none" "$(ratio "${RPS[$s/users/me+storm]:-}" "${RPS[$s/users/me]:-}")"
    done
}

report | tee "$RAW/report.txt"

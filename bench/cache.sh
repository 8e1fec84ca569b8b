#!/usr/bin/env bash
# drover cache benchmark: GET /v1/users/{id} on PostgreSQL with the cache
# off, with the cache on (in-process tier in front of a private Redis, warm),
# with the in-process tier alone (no Redis), and with Redis but an in-process
# TTL so short that reads fall through to Redis. Reports req/s, p50/p99, CPU
# per request (drover, PostgreSQL backends, redis-server) and each tier's hit
# ratio from the /healthz counters. See bench/README.md.
#
#   bash bench/cache.sh                 # full run (~70 s plus the build)
#   DURATION=3s WARMUP=1s bash bench/cache.sh
#   MODES="nocache redis" bash bench/cache.sh   # just the two that the goal compares
#
# Knobs (environment variables, defaults in brackets):
#   DURATION [10s]    length of each measured wrk run
#   WARMUP [2s]       unmeasured wrk run before each measured one; it also
#                     warms the cache (0 = none: the cache starts cold)
#   CONNS [64]        wrk connections
#   THREADS [1]       wrk threads
#   MODES [nocache redis local redis-tier redis-spread]  which servers to run, in order
#   SHORT_TTL [1ns]   cache.local_ttl of the redis-tier and redis-spread servers
#   SPREAD_KEYS [10000]  users the redis-spread server reads, at random
#   SERVER_CPU [0]    CPU drover (one worker) is pinned to
#   LOAD_CPU [1]      CPU wrk is pinned to
#   REDIS_CPU []      CPU for the private redis-server (empty: not pinned)
#   SPEEDUP_GOAL [2.0]  goal for cached / uncached req/s (at least)
#   P99_GOAL [1.00]   goal for cached / uncached p99 (at most: "no worse")
#   SKIP_BUILD [0]    1 uses the binary already built
#   PG_HOST [127.0.0.1], PG_PORT [5432], PG_USER [root], PG_ADMIN_DB [test]
#                     PostgreSQL server (trust auth); the script creates one
#                     database there and drops it at the end
#   REDIS_SERVER [redis-server], REDIS_CLI [redis-cli]
#   DROVER_BIN [TARGET_DIR/release/drover], DROVER_ARGS [] extra `serve` args
#   TARGET_DIR [<repo>/target]
#   CARGO_LOCK [/tmp/drover-cargo.lock]  the cargo build runs under flock on it
#   WAIT_TRIES [100]  tries (0.1 s apart) for a server to come up
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh" # the shared knobs (TARGET_DIR, CARGO_LOCK, SERVER_CPU, ...), log, die, cleanup, ...

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
MODES=${MODES:-nocache redis local redis-tier redis-spread}
SHORT_TTL=${SHORT_TTL:-1ns}
SPREAD_KEYS=${SPREAD_KEYS:-10000}
REDIS_CPU=${REDIS_CPU:-}
SPEEDUP_GOAL=${SPEEDUP_GOAL:-2.0}
P99_GOAL=${P99_GOAL:-1.00}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-root}
PG_ADMIN_DB=${PG_ADMIN_DB:-test}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}

# The bench users (one per server). Plain ASCII without quotes or backslashes.
BENCH_PASSWORD="correct horse battery staple $$"
BENCH_NAME="Bench User"

# ---------------------------------------------------------------- cleanup --
bench_cleanup_init drover-cache-bench # WORK, and a trap that stops every PID in STARTED

# ------------------------------------------------------------ preflight --
command -v wrk >/dev/null || apt_install wrk
for tool in curl taskset pgrep awk sed psql; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
for mode in $MODES; do
    case $mode in
    nocache | local) ;;
    redis | redis-tier | redis-spread) NEED_REDIS=1 ;;
    *) die "unknown mode '$mode' in MODES (nocache, redis, local, redis-tier, redis-spread)" ;;
    esac
done
NEED_REDIS=${NEED_REDIS:-0}
if [[ $NEED_REDIS == 1 ]]; then
    command -v "$REDIS_SERVER" >/dev/null || apt_install redis-server
    command -v "$REDIS_CLI" >/dev/null || die "$REDIS_CLI is required"
fi
bench_preflight
# This benchmark is about the database read the cache saves: no PostgreSQL,
# no benchmark.
psql_admin 'SELECT 1' >/dev/null 2>"$WORK/psql.err" ||
    die "PostgreSQL unreachable at $PG_USER@$PG_HOST:$PG_PORT/$PG_ADMIN_DB: $(head -n 1 "$WORK/psql.err")"

# ---------------------------------------------------------------- build --
if [[ $SKIP_BUILD != 1 ]]; then
    log "+ flock $CARGO_LOCK cargo build --release (in $ROOT)"
    (cd "$ROOT" && flock "$CARGO_LOCK" cargo build --release --target-dir "$TARGET_DIR") ||
        die "drover did not build; SKIP_BUILD=1 uses the binary already built"
fi
[[ -x $DROVER_BIN ]] || die "no drover binary at $DROVER_BIN"

# ------------------------------------------------------------- helpers --
per_req() { # ticks requests -> microseconds of CPU per request, or n/a
    awk -v t="${1:-}" -v hz="$CLK_TCK" -v n="${2:-0}" 'BEGIN {
        if (t !~ /^[0-9]+$/ || n + 0 <= 0) print "n/a"; else printf "%.2f", t / hz * 1e6 / n }'
}

sum_us() { # values... -> their sum, n/a if any is not a number; "-" counts as 0
    awk 'BEGIN { s = 0; for (i = 1; i < ARGC; i++) { v = ARGV[i]; if (v == "-") continue;
        if (v !~ /^[0-9.]+$/) { print "n/a"; exit } s += v } printf "%.2f", s }' "$@"
}

# ----------------------------------------------------------- redis-server --
REDIS_PID="" REDIS_PORT="" REDIS_URL=""

redis() { "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# A private redis-server on a free loopback port: no persistence, its own
# directory, killed by PID at the end (never the machine's shared instance).
start_redis() {
    local try port pid i started
    for ((try = 0; try < 10; try++)); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        port_in_use "$port" && continue
        local cmd=(taskset -c "${REDIS_CPU:-0-$(($(nproc) - 1))}" "$REDIS_SERVER" --port "$port" --bind 127.0.0.1
            --save "" --appendonly no --dir "$WORK" --daemonize no --protected-mode yes --loglevel warning)
        log "== redis: ${cmd[*]}"
        "${cmd[@]}" </dev/null >"$WORK/redis.log" 2>&1 &
        pid=$!
        STARTED+=("$pid")
        started=0
        for ((i = 0; i < WAIT_TRIES; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            # Ours answers, not some other server that took the port meanwhile.
            if [[ $("$REDIS_CLI" -h 127.0.0.1 -p "$port" INFO server 2>/dev/null |
                sed -n 's/^process_id:\([0-9]*\).*/\1/p') == "$pid" ]]; then
                started=1
                break
            fi
            sleep 0.1
        done
        if ((started)); then
            REDIS_PID=$pid REDIS_PORT=$port REDIS_URL="redis://127.0.0.1:$port/0"
            log "   redis-server pid $pid on 127.0.0.1:$port"
            return 0
        fi
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        log "   redis-server on port $port did not come up; trying another port"
        tail -n 3 "$WORK/redis.log" >&2 || true
    done
    die "could not start a private redis-server"
}

# --------------------------------------------------------- the servers --
SRV_PID="" SRV_ADDR="" SRV_PIDS=() TOKEN="" USER_ID="" BENCH_EMAIL=""

# Register this server's bench user, log in with curl, keep the token; check
# that GET /v1/users/{id} answers 200 with the user before any load.
setup_user() {
    local name=$1 res status body
    BENCH_EMAIL=bench-$$-$name@example.com
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
    res=$(http GET "/v1/users/$USER_ID" "" "$TOKEN")
    status=${res%%	*} body=${res#*	}
    [[ $status == 200 && $body == *"\"$BENCH_EMAIL\""* ]] ||
        die "$name: GET /v1/users/$USER_ID with the token answered $status: $body"
    log "   user $USER_ID registered, token of ${#TOKEN} bytes; read checked"
}

psql_db() { # sql: run on the bench database, quietly
    PGCONNECT_TIMEOUT=3 psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" \
        -d "$CUR_DB" -tA -c "$1"
}

# setup_spread name: SPREAD_KEYS more users, inserted with SQL (they are only
# read, so they share the bench user's password hash), and the bench user
# made an admin so that it may read them; then a fresh token that carries
# the admin role. Sets SPREAD_LO and SPREAD_HI, the range of their ids.
SPREAD_LO="" SPREAD_HI=""
setup_spread() {
    local name=$1 range res status body
    range=$(psql_db "UPDATE users SET role = 'admin' WHERE id = $USER_ID;
        INSERT INTO users (email, name, password_hash)
            SELECT 'spread-' || g || '-$$@example.com', 'Spread User ' || g, u.password_hash
            FROM generate_series(1, $SPREAD_KEYS) AS g, users AS u WHERE u.id = $USER_ID;
        SELECT min(id) || ' ' || max(id) FROM users WHERE email LIKE 'spread-%-$$@example.com'") ||
        die "$name: could not insert the $SPREAD_KEYS spread users"
    read -r SPREAD_LO SPREAD_HI <<<"$range"
    [[ $SPREAD_LO =~ ^[0-9]+$ && $SPREAD_HI =~ ^[0-9]+$ ]] || die "$name: no id range for the spread users: '$range'"
    res=$(http POST /v1/auth/login "{\"email\":\"$BENCH_EMAIL\",\"password\":\"$BENCH_PASSWORD\"}")
    status=${res%%	*} body=${res#*	}
    [[ $status == 200 ]] || die "$name: admin login answered $status: $body"
    TOKEN=$(sed -n 's/.*"access_token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' <<<"$body")
    res=$(http GET "/v1/users/$SPREAD_HI" "" "$TOKEN")
    status=${res%%	*}
    [[ $status == 200 ]] || die "$name: GET /v1/users/$SPREAD_HI as admin answered $status: ${res#*	}"
    log "   $SPREAD_KEYS users inserted (ids $SPREAD_LO..$SPREAD_HI); user $USER_ID is now an admin, new token"
}

# readyz_redis: the "redis" field of GET /readyz
readyz_redis() {
    local res
    res=$(http GET /readyz)
    sed -n 's/.*"redis"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' <<<"${res#*	}"
}

COUNTER_NAMES=(local_hits local_misses redis_hits redis_misses redis_errors loads invalidations)
# counters: the worker's pid, generation and cache counters from GET /healthz,
# space-separated in that order (pid generation local_hits ... invalidations)
counters() {
    local res body status c v out
    res=$(http GET /healthz)
    status=${res%%	*} body=${res#*	}
    [[ $status == 200 ]] || die "GET /healthz answered $status: $body"
    out=""
    for c in pid generation "${COUNTER_NAMES[@]}"; do
        v=$(sed -n "s/.*\"$c\"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p" <<<"$body")
        [[ -n $v ]] || die "GET /healthz has no \"$c\" counter: $body"
        out+="$v "
    done
    echo "${out% }"
}

# ------------------------------------------------------------- measure --
declare -A RPS=() P50=() P99=() CPU_US=() PG_US=() REDIS_US=() ERRS=() REQS=() NPG=() \
    C_LH=() C_LM=() C_RH=() C_RM=() C_RE=() C_LOADS=() C_INV=() REDIS_STATUS=() NOTE=() INSTR=()
CUR_DB=""
ROWS=()
RAW=$TARGET_DIR/bench/cache-last-run
mkdir -p "$RAW"
rm -f "$RAW"/*.txt

# measure name [lo hi]: warm-up, then the measured wrk run of GET
# /v1/users/{id} with the bearer token, pinned to LOAD_CPU; CPU of drover, of
# the PostgreSQL backends and of redis-server, and the /healthz counter
# deltas, around it. Without lo/hi the id is the bench user's; with them
# each request draws an id from lo..hi (bench/spread.lua).
measure() {
    local name=$1 key=$1 path=/v1/users/$USER_ID
    local args=(-t "$THREADS" -c "$CONNS" --latency -H "Authorization: Bearer $TOKEN")
    local url="http://$SRV_ADDR$path" tail=()
    if (($# == 3)); then
        path="/v1/users/{$2..$3}"
        url="http://$SRV_ADDR"
        args+=(-s "$BENCH_DIR/spread.lua")
        tail=(-- "$2" "$3")
    fi
    if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
        taskset -c "$LOAD_CPU" wrk "${args[@]}" -d "$WARMUP" "$url" "${tail[@]}" >/dev/null 2>&1 || true
    fi
    log "  $name: wrk -t$THREADS -c$CONNS -d$DURATION GET $path"
    local t0 t1 out rc=0 backends=() pg0=0 pg1=0 r0=0 r1=0 c0=() c1=() cs
    mapfile -t backends < <(pg_backends)
    NPG[$key]=${#backends[@]}
    cs=$(counters) || exit 1
    read -ra c0 <<<"$cs"
    ((${#backends[@]} == 0)) || pg0=$(cpu_ticks "${backends[@]}")
    [[ -z $REDIS_PID ]] || r0=$(cpu_ticks "$REDIS_PID")
    perf_start "${SRV_PIDS[@]}"
    t0=$(cpu_ticks "${SRV_PIDS[@]}")
    out=$(taskset -c "$LOAD_CPU" wrk "${args[@]}" -d "$DURATION" "$url" "${tail[@]}" 2>&1) || rc=$?
    t1=$(cpu_ticks "${SRV_PIDS[@]}")
    perf_stop
    [[ -z $REDIS_PID ]] || r1=$(cpu_ticks "$REDIS_PID")
    ((${#backends[@]} == 0)) || pg1=$(cpu_ticks "${backends[@]}")
    cs=$(counters) || exit 1
    read -ra c1 <<<"$cs"
    printf '%s\n' "$out" >"$RAW/$name-users-id.txt"
    ((rc == 0)) || log "warning: wrk exited with status $rc (output in $RAW/$name-users-id.txt)"
    parse_wrk "$key" "$out"
    CPU_US[$key]=$(per_req $((t1 - t0)) "${REQS[$key]}")
    INSTR[$key]=$(per_req_instr "$PERF_COUNT" "${REQS[$key]}")
    PG_US[$key]=n/a
    ((${#backends[@]} == 0)) || PG_US[$key]=$(per_req $((pg1 - pg0)) "${REQS[$key]}")
    REDIS_US[$key]=-
    [[ -z $REDIS_PID ]] || REDIS_US[$key]=$(per_req $((r1 - r0)) "${REQS[$key]}")
    if [[ ${c0[0]} != "${c1[0]}" || ${c0[1]} != "${c1[1]}" ]]; then
        log "warning: $name: /healthz answered from another worker after the run (pid/generation ${c0[0]}/${c0[1]} -> ${c1[0]}/${c1[1]}): the counters are not comparable"
        NOTE[$key]="worker changed during the run: counters not comparable"
    fi
    C_LH[$key]=$((c1[2] - c0[2])) C_LM[$key]=$((c1[3] - c0[3]))
    C_RH[$key]=$((c1[4] - c0[4])) C_RM[$key]=$((c1[5] - c0[5])) C_RE[$key]=$((c1[6] - c0[6]))
    C_LOADS[$key]=$((c1[7] - c0[7])) C_INV[$key]=$((c1[8] - c0[8]))
    ROWS+=("$key")
    log "    -> ${RPS[$key]} req/s, p50/p99 ${P50[$key]}/${P99[$key]} ms, ${CPU_US[$key]} us CPU/req, ${INSTR[$key]} instr/req" \
        "+ ${PG_US[$key]} in ${#backends[@]} PostgreSQL backends + ${REDIS_US[$key]} in redis, ${ERRS[$key]} errors;" \
        "cache: local ${C_LH[$key]}/${C_LM[$key]} hit/miss, redis ${C_RH[$key]}/${C_RM[$key]}/${C_RE[$key]} hit/miss/error, ${C_LOADS[$key]} loads"
}

# ----------------------------------------------------------------- run --
log "drover cache bench: DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS THREADS=$THREADS MODES='$MODES'"
log "drover --workers 1 on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU; raw wrk output in $RAW"

DB=drover_cache_bench_$$
psql_admin "CREATE DATABASE \"$DB\"" >/dev/null || die "could not create database $DB"
DBS_CREATED+=("$DB")
CUR_DB=$DB
DB_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB"
[[ $NEED_REDIS == 1 ]] && start_redis

SERVERS=()
for mode in $MODES; do
    name=pg-$mode
    env_args=()
    case $mode in
    nocache) env_args=(DROVER_CACHE__ENABLED=false DROVER_CACHE__REDIS_URL=) ;;
    local) env_args=(DROVER_CACHE__ENABLED=true DROVER_CACHE__REDIS_URL=) ;;
    redis) env_args=(DROVER_CACHE__ENABLED=true DROVER_CACHE__REDIS_URL="$REDIS_URL") ;;
    redis-tier | redis-spread) env_args=(DROVER_CACHE__ENABLED=true DROVER_CACHE__REDIS_URL="$REDIS_URL" DROVER_CACHE__LOCAL_TTL="$SHORT_TTL") ;;
    esac
    start_drover "$name" "$DB_URL" "${env_args[@]}"
    SERVERS+=("$name")
    setup_user "$name"
    if [[ $mode == redis* ]]; then
        # Bounded wait for Redis to be up in the worker (it connects in the
        # background), so the warm-up fills Redis too.
        for ((i = 0; i < WAIT_TRIES; i++)); do
            [[ $(readyz_redis) == up ]] && break
            sleep 0.1
        done
    fi
    REDIS_STATUS[$name]=$(readyz_redis)
    REDIS_STATUS[$name]=${REDIS_STATUS[$name]:-?}
    case $mode in
    nocache | local) [[ ${REDIS_STATUS[$name]} == not_configured ]] ||
        log "warning: $name: /readyz says redis is '${REDIS_STATUS[$name]}', expected not_configured" ;;
    *) [[ ${REDIS_STATUS[$name]} == up ]] ||
        log "warning: $name: /readyz says redis is '${REDIS_STATUS[$name]}' after $WAIT_TRIES tries, expected up" ;;
    esac
    if [[ $mode == redis-spread ]]; then
        setup_spread "$name"
        measure "$name" "$SPREAD_LO" "$SPREAD_HI"
    else
        measure "$name"
    fi
    if [[ $mode == redis* ]]; then
        keys=$(redis --scan --pattern 'drover:*' 2>/dev/null | grep -c . || true)
        log "   redis holds ${keys:-0} drover:* keys"
        ((${keys:-0} > 0)) || log "warning: $name: no drover:* key in Redis after the run: the Redis tier was not used"
    fi
    stop_server "$name" "$SRV_PID"
done
drop_db "$DB"

# -------------------------------------------------------------- report --
pct() { # part whole -> percentage with one decimal, or -
    awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 <= 0) print "-"; else printf "%.1f%%", a / b * 100 }'
}
per() { # count requests -> count per request, or -
    awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 <= 0) print "-"; else printf "%.3f", a / b }'
}
line() { # label value [goal] [verdict]
    printf '  %-68s %7s' "$1" "$2"
    [[ -n ${3:-} ]] && printf '   goal %-7s %s' "$3" "${4:-}"
    printf '\n'
}
verdict_min() { # value min
    awk -v v="$1" -v g="$2" 'BEGIN { if (v !~ /^[0-9.]+$/) print ""; else if (v + 0 >= g + 0) print "ok"; else print "BELOW GOAL" }'
}
has() { [[ -n ${RPS[$1]:-} ]]; }

report() {
    local key total lk rk
    echo
    echo "drover cache bench  $(date -u '+%Y-%m-%d %H:%M:%SZ')  git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
        " $(nproc) CPUs  load avg $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "GET /v1/users/{id} on PostgreSQL; drover --workers 1 pinned to CPU $SERVER_CPU;" \
        "wrk -t $THREADS -c $CONNS -d $DURATION (warm-up $WARMUP) on CPU $LOAD_CPU"
    [[ -z $REDIS_PORT ]] || echo "private redis-server $("$REDIS_SERVER" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') on port $REDIS_PORT," \
        "CPU ${REDIS_CPU:-not pinned}; redis-tier and redis-spread: cache.local_ttl=$SHORT_TTL"
    ! has pg-redis-spread || echo "redis-spread: an admin reads $SPREAD_KEYS users, a random id per request (bench/spread.lua); the others read one id"
    echo
    printf '%-15s %10s %9s %9s %11s %11s %11s %11s %11s %7s\n' server "req/s" "p50 ms" "p99 ms" "CPU us/req" "instr/req" "pg us/req" "redis us/req" "total us/req" errors
    printf '%-15s %10s %9s %9s %11s %11s %11s %11s %11s %7s\n' --------------- ---------- --------- --------- ----------- ----------- ----------- ----------- ----------- -------
    for key in "${ROWS[@]}"; do
        total=$(sum_us "${CPU_US[$key]}" "${PG_US[$key]}" "${REDIS_US[$key]}")
        printf '%-15s %10s %9s %9s %11s %11s %11s %11s %11s %7s\n' "$key" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" \
            "${CPU_US[$key]}" "${INSTR[$key]}" "${PG_US[$key]}" "${REDIS_US[$key]}" "$total" "${ERRS[$key]}"
    done
    echo "CPU us/req and instr/req: drover (supervisor + worker); pg: the PostgreSQL backends of the bench database (not pinned);"
    echo "redis: the private redis-server (it runs for the whole script, so it is counted for every server); total: the three."
    echo "instr/req: $PERF_NOTE"
    echo
    echo "cache counters over the measured run (deltas of GET /healthz; requests: wrk's count):"
    printf '  %-15s %9s %9s %9s %8s %9s %9s %6s %8s %8s %9s %9s\n' server requests "local hit" "local miss" "local %" \
        "redis hit" "redis miss" "r err" "redis %" loads "loads/req" "redis/req"
    for key in "${ROWS[@]}"; do
        lk=$((C_LH[$key] + C_LM[$key])) rk=$((C_RH[$key] + C_RM[$key] + C_RE[$key]))
        printf '  %-15s %9s %9s %9s %8s %9s %9s %6s %8s %8s %9s %9s\n' "$key" "${REQS[$key]}" "${C_LH[$key]}" "${C_LM[$key]}" \
            "$(pct "${C_LH[$key]}" "$lk")" "${C_RH[$key]}" "${C_RM[$key]}" "${C_RE[$key]}" "$(pct "${C_RH[$key]}" "$rk")" \
            "${C_LOADS[$key]}" "$(per "${C_LOADS[$key]}" "${REQS[$key]}")" "$(per "$rk" "${REQS[$key]}")"
        [[ -z ${NOTE[$key]:-} ]] || echo "    $key: ${NOTE[$key]}"
    done
    echo "  local % = local hits / (hits + misses); redis % = Redis hits / Redis GETs (hits + misses + errors);"
    echo "  loads/req = database reads per request; redis/req = Redis GETs per request. Misses on one key that"
    echo "  arrive while a Redis GET or a load for it is in flight join it (single flight), so they cost no GET."
    if has pg-nocache; then
        echo "  pg-nocache: cache.enabled=false bypasses the cache and its counters: every request reads the database."
    fi
    echo "  /readyz redis: $(for key in "${ROWS[@]}"; do printf '%s=%s ' "$key" "${REDIS_STATUS[$key]}"; done)"
    echo
    echo "ratios (same run):"
    local r
    if has pg-redis && has pg-nocache; then
        r=$(ratio "${RPS[pg-redis]}" "${RPS[pg-nocache]}")
        line "cached (pg-redis) / uncached (pg-nocache) req/s" "$r" ">= $SPEEDUP_GOAL" "$(verdict_min "$r" "$SPEEDUP_GOAL")"
        r=$(ratio "${P99[pg-redis]}" "${P99[pg-nocache]}")
        line "cached / uncached p99 (${P99[pg-redis]} / ${P99[pg-nocache]} ms)" "$r" "<= $P99_GOAL" "$(verdict_max "$r" "$P99_GOAL")"
        line "cached / uncached p50 (${P50[pg-redis]} / ${P50[pg-nocache]} ms)" "$(ratio "${P50[pg-redis]}" "${P50[pg-nocache]}")"
        line "cached / uncached drover CPU us/req" "$(ratio "${CPU_US[pg-redis]}" "${CPU_US[pg-nocache]}")"
        line "cached / uncached drover instr/req" "$(ratio "${INSTR[pg-redis]}" "${INSTR[pg-nocache]}")"
        line "cached / uncached drover+pg+redis CPU us/req" \
            "$(ratio "$(sum_us "${CPU_US[pg-redis]}" "${PG_US[pg-redis]}" "${REDIS_US[pg-redis]}")" \
                "$(sum_us "${CPU_US[pg-nocache]}" "${PG_US[pg-nocache]}" "${REDIS_US[pg-nocache]}")")"
    fi
    if has pg-local && has pg-nocache; then
        line "in-process only (pg-local) / uncached req/s" "$(ratio "${RPS[pg-local]}" "${RPS[pg-nocache]}")"
        line "in-process only / uncached drover CPU us/req" "$(ratio "${CPU_US[pg-local]}" "${CPU_US[pg-nocache]}")"
        line "in-process only / uncached drover instr/req" "$(ratio "${INSTR[pg-local]}" "${INSTR[pg-nocache]}")"
    fi
    if has pg-local && has pg-redis; then
        line "pg-redis / pg-local req/s (cost of having Redis configured)" "$(ratio "${RPS[pg-redis]}" "${RPS[pg-local]}")"
    fi
    if has pg-redis-tier && has pg-nocache; then
        line "Redis tier (pg-redis-tier) / uncached req/s" "$(ratio "${RPS[pg-redis-tier]}" "${RPS[pg-nocache]}")"
        line "Redis tier / uncached drover CPU us/req" "$(ratio "${CPU_US[pg-redis-tier]}" "${CPU_US[pg-nocache]}")"
        line "Redis tier / uncached drover instr/req" "$(ratio "${INSTR[pg-redis-tier]}" "${INSTR[pg-nocache]}")"
        line "Redis tier / uncached p99 (${P99[pg-redis-tier]} / ${P99[pg-nocache]} ms)" "$(ratio "${P99[pg-redis-tier]}" "${P99[pg-nocache]}")"
    fi
    if has pg-redis-spread && has pg-nocache; then
        line "Redis per read (pg-redis-spread) / uncached req/s" "$(ratio "${RPS[pg-redis-spread]}" "${RPS[pg-nocache]}")"
        line "Redis per read / uncached drover CPU us/req" "$(ratio "${CPU_US[pg-redis-spread]}" "${CPU_US[pg-nocache]}")"
        line "Redis per read / uncached drover instr/req" "$(ratio "${INSTR[pg-redis-spread]}" "${INSTR[pg-nocache]}")"
        line "Redis per read / uncached drover+pg+redis CPU us/req" \
            "$(ratio "$(sum_us "${CPU_US[pg-redis-spread]}" "${PG_US[pg-redis-spread]}" "${REDIS_US[pg-redis-spread]}")" \
                "$(sum_us "${CPU_US[pg-nocache]}" "${PG_US[pg-nocache]}" "${REDIS_US[pg-nocache]}")")"
        line "Redis per read / uncached p99 (${P99[pg-redis-spread]} / ${P99[pg-nocache]} ms)" "$(ratio "${P99[pg-redis-spread]}" "${P99[pg-nocache]}")"
    fi
}

report | tee "$RAW/report.txt"

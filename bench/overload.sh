#!/usr/bin/env bash
# drover overload bench: goodput through more traffic than the machine can
# serve, with admission control on and off. See bench/README.md.
#
# One worker on SERVER_CPU serves GET /v1/users/{id} (cache off, so every
# read is a PostgreSQL query), the database held to DB_CPU of a CPU so that
# it, not the worker, is the bottleneck. First its capacity C: 2xx per second under
# closed-loop load. Then, for admission control on and off, with an
# open-loop generator (bench/openloop, or oha -q RATE --latency-correction
# with GEN=oha: requests are due at a fixed rate whatever the latency, and a
# request's latency counts from when it was due):
#   - 0.5 x C for BASE_DURATION: the normal p99;
#   - 3 x C for OVER_DURATION: goodput, the 2xx answered within 500 ms, per
#     second and as a share of C (goal >= 0.90 with admission on), and the
#     p99 of what was answered 2xx (goal <= 5 x the normal p99);
#   - a spike: 0.5 x C throughout, plus 4.5 x C more for SPIKE_LEN seconds;
#     per-second latency of the steady stream, and how many seconds after
#     the spike its p99 is back within 2 x normal (goal <= 2).
#
#   bash bench/overload.sh              # ~6 min plus the build (and oha's, once)
#   SKIP_OFF=1 bash bench/overload.sh   # admission control on only
#   DB_CPU= bash bench/overload.sh      # the database as it is: the worker's CPU runs out first
#
# Knobs (environment variables, defaults in brackets):
#   CAP_DURATION [10s] CAP_CONNS [64]   the closed-loop capacity run
#   BASE_DURATION [10] OVER_DURATION [20]  seconds of the open-loop runs
#   SPIKE_BEFORE [8] SPIKE_LEN [5] SPIKE_AFTER [10]  seconds of the spike run
#   GEN [openloop]    the open-loop generator: openloop (bench/openloop, built
#                     into TARGET_DIR/bench: pipelined requests on GEN_CONNS
#                     connections, sent when due whatever the answers) or oha
#   GEN_MODE [clients]  openloop: clients (one request in flight per
#                     connection, as independent clients) or pipelined (each
#                     connection's requests sent when due, whatever it owes;
#                     the server then sees one request per connection at a time)
#   GEN_CONNS [2000]  openloop's connections
#   OPEN_CONNS [1000]  oha's connections (a request due while all are busy
#                     waits in oha, and that wait counts)
#   OVER_FACTOR [3]   the overload, as a multiple of C (the issue's goal is for 3;
#                     oha on one core sends at most ~36,000 requests/s here)
#   CAPACITY []       skip the capacity run and use this C
#   SKIP_OFF [0]      1: admission control on only
#   DB_CPU [0.1]      a fraction of one CPU: the bench database's
#                     PostgreSQL backends are held to it by a cpu cgroup the
#                     script makes (and removes), so that the database, not
#                     the worker, is what runs out first, as when it is
#                     another machine. Needs root and a cpu cgroup
#                     controller (v1, or cgroup2 with cpu enabled); without
#                     them the script says so and runs with the database as
#                     it is, as DB_CPU= (empty) does.
#   DB_CPUSET [SERVER_CPU]  with DB_CPU: the CPUs those backends may run on
#                     (taskset), away from the generator, whose own work
#                     grows with the offered load and would otherwise take
#                     the database's share of LOAD_CPU exactly when the
#                     overload is measured
#   OHA [oha]         the oha binary; installed with `cargo install oha --locked`
#                     (under flock CARGO_LOCK) when missing
#   SERVER_CPU [0] LOAD_CPU [1] SKIP_BUILD [0] TARGET_DIR CARGO_LOCK DROVER_BIN,
#   PG_HOST [127.0.0.1] PG_PORT [5432] PG_USER [root] PG_ADMIN_DB [test]
#                     as in the other scripts (bench/lib.sh)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

CAP_DURATION=${CAP_DURATION:-10s}
CAP_CONNS=${CAP_CONNS:-64}
BASE_DURATION=${BASE_DURATION:-10}
OVER_DURATION=${OVER_DURATION:-20}
SPIKE_BEFORE=${SPIKE_BEFORE:-8}
SPIKE_LEN=${SPIKE_LEN:-5}
SPIKE_AFTER=${SPIKE_AFTER:-10}
OPEN_CONNS=${OPEN_CONNS:-1000}
GEN=${GEN:-openloop}
GEN_MODE=${GEN_MODE:-clients}
GEN_CONNS=${GEN_CONNS:-2000}
OPENLOOP_BIN=${OPENLOOP_BIN:-$BENCH_TARGET_DIR/release/openloop}
OVER_FACTOR=${OVER_FACTOR:-3}
CAPACITY=${CAPACITY:-}
SKIP_OFF=${SKIP_OFF:-0}
DB_CPU=${DB_CPU-0.1}
DB_CPUSET=${DB_CPUSET:-$SERVER_CPU}
OHA=${OHA:-oha}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-root}
PG_ADMIN_DB=${PG_ADMIN_DB:-test}
# Every read goes to the database: the user cache would answer from memory.
export DROVER_CACHE__ENABLED=false

bench_cleanup_init drover-overload-bench

# ------------------------------------------------------------ preflight --
for tool in curl taskset python3 psql; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
ensure_oha
bench_preflight
psql_admin 'SELECT 1' >/dev/null || die "PostgreSQL is not reachable at $PG_USER@$PG_HOST:$PG_PORT/$PG_ADMIN_DB"

if [[ $SKIP_BUILD != 1 ]]; then
    log "+ flock $CARGO_LOCK cargo build --release (in $ROOT)"
    (cd "$ROOT" && flock "$CARGO_LOCK" cargo build --release --target-dir "$TARGET_DIR") ||
        die "drover did not build; SKIP_BUILD=1 uses the binary already built"
fi
[[ -x $DROVER_BIN ]] || die "no drover binary at $DROVER_BIN"
if [[ $GEN == openloop ]]; then
    [[ $SKIP_BUILD == 1 && -x $OPENLOOP_BIN ]] ||
        cargo_build "$BENCH_DIR/openloop/Cargo.toml" "$BENCH_TARGET_DIR" || die "bench/openloop did not build"
    GEN_DESC="openloop $GEN_MODE -c $GEN_CONNS"
    # One descriptor a connection, and more for the spike's second generator.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
else
    GEN_DESC="oha -c $OPEN_CONNS --latency-correction"
fi

# ---------------------------------------------------------------- helpers --
SRV_PID="" SRV_ADDR="" SRV_PIDS=() TOKEN="" USER_ID=""

setup_user() { # name: register and log in the bench user, keep the token
    local name=$1 res status body email="overload-$$-$1@example.com"
    res=$(http POST /v1/auth/register "{\"email\":\"$email\",\"password\":\"correct horse battery\",\"name\":\"Bench\"}")
    status=${res%%	*} body=${res#*	}
    [[ $status == 201 ]] || die "$name: register answered $status: $body"
    USER_ID=$(sed -n 's/.*"id":\([0-9][0-9]*\).*/\1/p' <<<"$body")
    res=$(http POST /v1/auth/login "{\"email\":\"$email\",\"password\":\"correct horse battery\"}")
    status=${res%%	*} body=${res#*	}
    [[ $status == 200 ]] || die "$name: login answered $status: $body"
    TOKEN=$(sed -n 's/.*"access_token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' <<<"$body")
    res=$(http GET "/v1/users/$USER_ID" "" "$TOKEN")
    [[ ${res%%	*} == 200 ]] || die "$name: GET /v1/users/$USER_ID answered ${res%%	*}"
}

# oha_run db args...: oha pinned to LOAD_CPU against the user read, every
# request recorded in the SQLite file db.
oha_run() {
    local db=$1
    shift
    rm -f "$db"
    taskset -c "$LOAD_CPU" "$OHA" --no-tui --db-url "$db" -H "Authorization: Bearer $TOKEN" "$@" \
        "http://$SRV_ADDR/v1/users/$USER_ID" >"$db.out" 2>&1 ||
        log "warning: oha exited with an error (see $db.out): $(tail -n 3 "$db.out")"
}

rate() { awk -v c="$1" -v f="$2" 'BEGIN { printf "%d", c * f }'; }

# gen_run file qps seconds: the open-loop generator (GEN) at qps for
# seconds, every request recorded in file (oha: SQLite; openloop: text).
gen_run() {
    local file=$1 qps=$2 seconds=$3
    if [[ $GEN == openloop ]]; then
        taskset -c "$LOAD_CPU" "$OPENLOOP_BIN" "$SRV_ADDR" "/v1/users/$USER_ID" "$qps" "$seconds" "$GEN_CONNS" \
            "$GEN_MODE" "$file" "Authorization: Bearer $TOKEN" >"$file.out" 2>&1 ||
            log "warning: openloop exited with an error (see $file.out): $(tail -n 3 "$file.out")"
    else
        oha_run "$file" -q "$qps" -z "${seconds}s" -c "$OPEN_CONNS" --latency-correction
    fi
}

gen_file() { # name: where gen_run records name's requests
    if [[ $GEN == openloop ]]; then echo "$WORK/$1.tsv"; else echo "$WORK/$1.db"; fi
}

# open_loop name factor seconds: GEN at factor x C.
declare -A FIG=()
open_loop() {
    local name=$1 factor=$2 seconds=$3 file qps
    file=$(gen_file "$name")
    qps=$(rate "$C" "$factor")
    log "  $name: $GEN_DESC at $qps/s (${factor} x C) for ${seconds}s"
    gen_run "$file" "$qps" "$seconds"
    FIG[$name]=$(python3 "$BENCH_DIR/overload.py" open "$file" "$seconds" "$C")
    log "    -> ${FIG[$name]}"
}

fig() { # name key -> value
    tr ' ' '\n' <<<"${FIG[$1]}" | sed -n "s/^$2=//p"
}

spike_run() { # name: the steady stream with a spike on top
    local name=$1 base_q spike_q total=$((SPIKE_BEFORE + SPIKE_LEN + SPIKE_AFTER))
    base_q=$(rate "$C" 0.5)
    spike_q=$(rate "$C" 4.5)
    local steady_file spike_file
    steady_file=$(gen_file "$name-steady")
    spike_file=$(gen_file "$name-spike")
    log "  $name: $GEN_DESC at $base_q/s for ${total}s, plus $spike_q/s from ${SPIKE_BEFORE}s for ${SPIKE_LEN}s"
    gen_run "$steady_file" "$base_q" "$total" &
    local steady=$!
    STARTED+=("$steady")
    sleep "$SPIKE_BEFORE"
    gen_run "$spike_file" "$spike_q" "$SPIKE_LEN"
    wait "$steady" || true
    python3 "$BENCH_DIR/overload.py" spike "$steady_file" "$SPIKE_BEFORE" "$SPIKE_LEN" "$(fig "$2" p99_ms)" \
        >"$WORK/$name.spike"
    sed '$d' "$WORK/$name.spike" >&2
    FIG[$name]=$(tail -n 1 "$WORK/$name.spike")
    log "    -> ${FIG[$name]}"
}

# ------------------------------------------------- a database held to DB_CPU --
# Where the load runs out first decides what admission control can do. When
# it is the worker's own CPU (DB_CPU= here: one core for the worker,
# PostgreSQL beside it), every refusal costs that CPU too (reading and
# parsing the request, writing the 503: about a third of what serving it
# costs), so at 3 x C the refusals alone take most of it. When it is the
# database, refusing is cheap for what is short, and admission control
# decides whether the database's capacity goes to answers that arrive in
# time. DB_CPU makes the database the bottleneck on this one machine.
db_cgroup_start() { # db: hold db's backends, present and future, to DB_CPU of a CPU
    local db=$1 period=10000 quota
    quota=$(awk -v f="$DB_CPU" -v p="$period" 'BEGIN { q = int(f * p); if (q < 1000) q = 1000; print q }')
    cpu_cgroup drover-overload-bench
    if [[ -z $CPU_CGROUP ]]; then
        log "warning: DB_CPU needs root and a cpu cgroup controller; the database runs as it is"
        DB_CPU=""
        return 0
    fi
    local dir=$CPU_CGROUP
    if [[ -e $dir/cpu.cfs_quota_us ]]; then
        echo "$period" >"$dir/cpu.cfs_period_us"
        echo "$quota" >"$dir/cpu.cfs_quota_us"
    else
        echo "$quota $period" >"$dir/cpu.max"
    fi
    log "  the backends of $db held to $DB_CPU of a CPU ($quota us every $period us, $dir), on CPU $DB_CPUSET"
    # Backends appear as drover opens its connections: moved as they come
    # (their process title names the database; pgrep reads /proc).
    (
        declare -A seen=()
        while true; do
            for pid in $(pgrep -f "postgres: .* $db " || true); do
                [[ -z ${seen[$pid]:-} ]] || continue
                echo "$pid" >"$dir/cgroup.procs" 2>/dev/null &&
                    taskset -pc "$DB_CPUSET" "$pid" >/dev/null 2>&1 && seen[$pid]=1
            done
            sleep 0.05
        done
    ) &
    STARTED+=("$!")
}

# ------------------------------------------------------------------- run --
db=drover_overload_bench_$$
psql_admin "CREATE DATABASE \"$db\"" >/dev/null || die "could not create database $db"
DBS_CREATED+=("$db")
[[ -z $DB_CPU ]] || db_cgroup_start "$db"
url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$db"
MODES=(on)
[[ $SKIP_OFF == 1 ]] || MODES+=(off)
C=${CAPACITY:-}
C_OFF=n/a
for mode in "${MODES[@]}"; do
    enabled=true
    [[ $mode == on ]] || enabled=false
    start_drover "admission-$mode" "$url" DROVER_ADMISSION__ENABLED=$enabled
    setup_user "$mode"
    if [[ -z $C ]]; then
        log "  capacity: oha -c $CAP_CONNS -z $CAP_DURATION (closed loop)"
        oha_run "$WORK/capacity.db" -c "$CAP_CONNS" -z "$CAP_DURATION"
        C=$(python3 "$BENCH_DIR/overload.py" capacity "$WORK/capacity.db")
        ((C > 0)) || die "no 2xx in the capacity run: $(tail -n 20 "$WORK/capacity.db.out")"
        log "    -> C = $C 2xx/s"
    fi
    if [[ $mode == off && -z $CAPACITY ]]; then
        # What admission control costs a healthy server: the same
        # closed-loop run without it.
        log "  capacity without admission control: oha -c $CAP_CONNS -z $CAP_DURATION"
        oha_run "$WORK/capacity-off.db" -c "$CAP_CONNS" -z "$CAP_DURATION"
        C_OFF=$(python3 "$BENCH_DIR/overload.py" capacity "$WORK/capacity-off.db")
        log "    -> $C_OFF 2xx/s"
    fi
    open_loop "$mode-base" 0.5 "$BASE_DURATION"
    open_loop "$mode-over" "$OVER_FACTOR" "$OVER_DURATION"
    spike_run "$mode-spike" "$mode-base"
    stop_server "admission-$mode" "$SRV_PID"
done

# ---------------------------------------------------------------- report --
printf '\ndrover overload bench: 1 worker on CPU %s, load on CPU %s, GET /v1/users/{id} on PostgreSQL%s, cache off\n' \
    "$SERVER_CPU" "$LOAD_CPU" "$([[ -z $DB_CPU ]] || echo " (its backends held to $DB_CPU of a CPU)")"
printf 'capacity C = %s 2xx/s (oha -c %s, closed loop; %s without admission control); overload: %s x C for %ss, %s\n\n' \
    "$C" "$CAP_CONNS" "$C_OFF" "$OVER_FACTOR" "$OVER_DURATION" "$GEN_DESC"
printf '%-10s %10s %10s %10s %8s %10s %10s %12s %10s\n' admission "normal p99" "sent/s" "good/s" good/C "p99" "p99 ratio" "503/s" "recovery"
for mode in "${MODES[@]}"; do
    ratio_p99=$(ratio "$(fig "$mode-over" p99_ms)" "$(fig "$mode-base" p99_ms)")
    printf '%-10s %8s ms %10s %10s %8s %7s ms %10s %12s %9ss\n' "$mode" \
        "$(fig "$mode-base" p99_ms)" "$(fig "$mode-over" sent_per_s)" "$(fig "$mode-over" good_per_s)" \
        "$(fig "$mode-over" good_over_c)" "$(fig "$mode-over" p99_ms)" "$ratio_p99" \
        "$(fig "$mode-over" shed_per_s)" "$(sed -n 's/^recovery_s=//p' <<<"${FIG[$mode-spike]}")"
done
printf '\ngoals (admission on): good/C >= 0.90; p99 ratio <= 5; recovery <= 2 s.\n'
printf 'good/s: 2xx answered within 500 ms of when they were due; sent/s below OVER_FACTOR x C means the generator could not offer the rate.\n'

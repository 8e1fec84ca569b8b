# shellcheck shell=bash
# Helpers shared by bench/run.sh, bench/json-rounds.sh, bench/users.sh and
# bench/cache.sh. Sourced, never run: `. "$BENCH_DIR/lib.sh"`, right after
# the script sets BENCH_DIR and before its own knobs. It sets the knobs every
# script shares (below), defines functions and a few globals, and starts
# nothing; the script calls bench_cleanup_init to get its work directory and
# the cleanup trap. The script's own `set -euo pipefail` applies to everything
# here.
#
# Globals the helpers read, set by the script: PG_HOST, PG_PORT, PG_USER,
# PG_ADMIN_DB (psql_admin), CUR_DB (pg_backends), and for parse_wrk the
# associative arrays RPS, REQS, P50, P99 and ERRS.

# ----------------------------------------------------------- shared knobs --
ROOT=$(cd "$BENCH_DIR/.." && pwd)
TARGET_DIR=${TARGET_DIR:-$ROOT/target}
BENCH_TARGET_DIR=$TARGET_DIR/bench # the comparison servers (floor, axum)
CARGO_LOCK=${CARGO_LOCK:-/tmp/drover-cargo.lock}
SKIP_BUILD=${SKIP_BUILD:-0}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
WAIT_TRIES=${WAIT_TRIES:-100}
DROVER_BIN=${DROVER_BIN:-$TARGET_DIR/release/drover}
DROVER_ARGS=${DROVER_ARGS:-}
# A load generator is one address logging in and registering as fast as it
# can: exactly what [rate_limit] refuses. The benches measure the server,
# not its limits; DROVER_RATE_LIMIT__ENABLED=true puts them back.
export DROVER_RATE_LIMIT__ENABLED=${DROVER_RATE_LIMIT__ENABLED:-false}

# The script's file name, for die's messages (run.sh, users.sh, ...).
BENCH_SCRIPT=${BASH_SOURCE[-1]##*/}
STOP_TIMEOUT_TENTHS=100 # 10 s for a server to exit after SIGTERM
CLK_TCK=$(getconf CLK_TCK)

log() { printf '%s\n' "$*" >&2; }
die() { log "$BENCH_SCRIPT: error: $*"; exit 1; }

# ------------------------------------------------- instructions (perf) --
# `perf stat -e PERF_EVENT -x, -p PIDS` counts the server's instructions (all
# processes and threads) over exactly the measured wrk run: it starts just
# before wrk and gets SIGINT right after. Where perf is missing or cannot
# count the event (a VM without a PMU reads "<not supported>"), or cannot
# attach, the instr/req column says n/a and the run goes on.
PERF=${PERF:-perf}
PERF_EVENT=${PERF_EVENT:-instructions}
PERF_OK=0 PERF_NOTE="" PERF_PID="" PERF_OUT="" PERF_COUNT=n/a PERF_SEQ=0

perf_value() { # perf stat -x, output on stdin -> the PERF_EVENT count, or nothing
    awk -F, -v e="$PERF_EVENT" '!/^#/ && index($3, e) == 1 { if ($1 ~ /^[0-9.]+$/) print $1; exit }'
}

proc_alive() { # pid: running, not a zombie
    local line
    line=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    line=${line##*) }
    [[ ${line:0:1} != Z ]]
}

perf_probe() { # once: can perf count PERF_EVENT on this machine?
    local out
    if ! command -v "$PERF" >/dev/null; then
        PERF_NOTE="n/a: $PERF not found"
        return 0
    fi
    out=$("$PERF" stat -x, -e "$PERF_EVENT" true 2>&1 >/dev/null) || true
    if [[ -n $(perf_value <<<"$out") ]]; then
        PERF_OK=1
        PERF_NOTE="perf stat -e $PERF_EVENT over the measured run, divided by wrk's request count"
    else
        PERF_NOTE="n/a: perf cannot count $PERF_EVENT here ($(grep -v '^#' <<<"$out" | grep -m1 . || echo 'no output'))"
        [[ $out != *"<not supported>"* ]] || PERF_NOTE="n/a: perf stat says $PERF_EVENT is <not supported> here (no hardware PMU, as in most VMs)"
    fi
}

perf_start() { # pids...: count PERF_EVENT on those still alive until perf_stop
    PERF_PID="" PERF_COUNT=n/a
    ((PERF_OK)) || return 0
    local pid live=() i
    for pid in "$@"; do proc_alive "$pid" && live+=("$pid"); done
    ((${#live[@]} > 0)) || return 0
    PERF_SEQ=$((PERF_SEQ + 1))
    PERF_OUT=$WORK/perf-stat-$PERF_SEQ.txt
    "$PERF" stat -x, -e "$PERF_EVENT" -o "$PERF_OUT" -p "$(IFS=,; echo "${live[*]}")" \
        </dev/null >/dev/null 2>"$PERF_OUT.err" &
    PERF_PID=$!
    STARTED+=("$PERF_PID")
    # Bounded wait until perf has its counters open, so the run is counted
    # from its first request.
    for ((i = 0; i < 100; i++)); do
        proc_alive "$PERF_PID" || break
        ls -l "/proc/$PERF_PID/fd" 2>/dev/null | grep -q perf_event && break
        sleep 0.02
    done
    sleep 0.05
}

perf_stop() { # sets PERF_COUNT: the count since perf_start, or n/a
    PERF_COUNT=n/a
    [[ -n $PERF_PID ]] || return 0
    local i v
    kill -INT "$PERF_PID" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        proc_alive "$PERF_PID" || break
        sleep 0.1
    done
    proc_alive "$PERF_PID" && kill -KILL "$PERF_PID" 2>/dev/null
    wait "$PERF_PID" 2>/dev/null || true
    v=$(perf_value <"$PERF_OUT" 2>/dev/null) || true
    if [[ -n $v ]]; then
        PERF_COUNT=$v
    else
        log "warning: perf stat counted no $PERF_EVENT: $(cat "$PERF_OUT.err" "$PERF_OUT" 2>/dev/null | grep -v '^#' | grep -m1 . || echo 'no output')"
    fi
    PERF_PID=""
}

per_req_instr() { # count requests -> count per request (whole number), or n/a
    awk -v c="${1:-}" -v n="${2:-0}" 'BEGIN {
        if (c !~ /^[0-9.]+$/ || n + 0 <= 0) print "n/a"; else printf "%.0f", c / n }'
}

# ---------------------------------------------------------------- cleanup --
STARTED=()     # every PID the script started (servers, wrk, perf, redis-server) or found under them
DBS_CREATED=() # PostgreSQL databases the script created (run.sh creates none)
CLEANUP_HOOKS=() # functions run at exit once the processes are stopped, before the databases are dropped
WORK=""

psql_admin() { # sql: run on the admin database, quietly
    PGCONNECT_TIMEOUT=3 psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" \
        -d "$PG_ADMIN_DB" -tA -c "$1"
}

drop_db() { # name: drop a database the script created, forget it
    local db=$1 keep=() d
    if psql_admin "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1; then
        for d in "${DBS_CREATED[@]}"; do [[ $d == "$db" ]] || keep+=("$d"); done
        DBS_CREATED=("${keep[@]}")
    else
        log "warning: could not drop database $db; drop it by hand"
    fi
}

cleanup() { # on EXIT: stop every PID in STARTED, drop DBS_CREATED, remove WORK
    local pid db
    for pid in "${STARTED[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        local i=0
        while kill -0 "$pid" 2>/dev/null && ((i < 30)); do sleep 0.1; i=$((i + 1)); done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    done
    local hook
    for hook in "${CLEANUP_HOOKS[@]}"; do "$hook" || true; done
    for db in "${DBS_CREATED[@]}"; do drop_db "$db"; done
    [[ -z $WORK ]] || rm -rf "$WORK"
}

# cpu_cgroup name: makes a cpu cgroup NAME-PID (cgroup v1's cpu controller,
# or cgroup2 with cpu enabled at its root) and sets CPU_CGROUP to its path;
# at exit the processes in it go back to its parent and it is removed.
# Processes in a cgroup of their own are out of their session's autogroup,
# so its settings (a quota, cpu.idle) hold at the top level. Without root or
# a cpu controller it warns and leaves CPU_CGROUP empty.
CPU_CGROUP=""
CPU_CGROUPS=()
cpu_cgroup() {
    local root=/sys/fs/cgroup/cpu
    CPU_CGROUP=""
    if [[ ! -e $root/cpu.cfs_quota_us ]]; then
        root=/sys/fs/cgroup
        if ! grep -qw cpu "$root/cgroup.subtree_control" 2>/dev/null; then
            log "warning: no cpu cgroup controller (/sys/fs/cgroup/cpu, v1, or cpu in /sys/fs/cgroup/cgroup.subtree_control) for $1"
            return 0
        fi
    fi
    if ! mkdir "$root/$1-$$" 2>/dev/null; then
        log "warning: could not make the cgroup $root/$1-$$ (root is needed)"
        return 0
    fi
    CPU_CGROUP=$root/$1-$$
    cpu_cgroup_track "$CPU_CGROUP"
}
cpu_cgroup_track() { # dir: a cgroup (made here or by drover) to empty and remove at exit
    CPU_CGROUPS+=("$1")
    [[ " ${CLEANUP_HOOKS[*]} " == *" cpu_cgroups_remove "* ]] || CLEANUP_HOOKS+=(cpu_cgroups_remove)
}
cpu_cgroup_empty() { # dir: its processes back to its parent; prints their PIDs
    local pid
    for pid in $(cat "$1/cgroup.procs" 2>/dev/null); do
        echo "$pid" >"${1%/*}/cgroup.procs" 2>/dev/null && echo "$pid"
    done
}
cpu_cgroups_remove() {
    local dir
    for dir in "${CPU_CGROUPS[@]}"; do
        [[ -d $dir ]] || continue
        cpu_cgroup_empty "$dir" >/dev/null
        rmdir "$dir" 2>/dev/null || log "warning: could not remove $dir"
    done
}

bench_cleanup_init() { # prefix: make WORK (a fresh temp dir) and set the traps
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# ------------------------------------------------------------ preflight --
need_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

apt_install() { # package: install a Debian package, printing the command
    log "+ apt-get install -y $1"
    if ! need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$1" >&2; then
        log "+ apt-get update && apt-get install -y $1"
        need_root apt-get update >&2
        need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$1" >&2
    fi
}

ensure_oha() { # OHA: the oha binary, installed with cargo (once) when missing
    if ! command -v "$OHA" >/dev/null && [[ ! -x $HOME/.cargo/bin/oha ]]; then
        log "+ flock $CARGO_LOCK cargo install oha --locked (once; a few minutes)"
        flock "$CARGO_LOCK" cargo install oha --locked >&2 || die "could not install oha"
    fi
    command -v "$OHA" >/dev/null || OHA=$HOME/.cargo/bin/oha
}

cargo_build() { # manifest target-dir: a release build, waiting for any other cargo build
    log "+ flock $CARGO_LOCK cargo build --release --manifest-path $1 --target-dir $2"
    flock "$CARGO_LOCK" cargo build --release --manifest-path "$1" --target-dir "$2"
}

# ------------------------------------------------------- processes, /proc --
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

proc_tree() { # pid: the pid and all its descendants
    local pid=$1 child
    echo "$pid"
    for child in $(pgrep -P "$pid" || true); do proc_tree "$child"; done
}

cpu_ticks() { # pids...: summed utime+stime (clock ticks) of those still alive
    local sum=0 pid line f
    for pid in "$@"; do
        line=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        # Fields after "comm" (which may hold spaces): state is field 3, so
        # utime (14) and stime (15) are at indexes 11 and 12. A process's
        # figures cover all its threads (for drover: the event loop and the
        # blocking pool that hashes passwords).
        read -ra f <<<"${line##*) }"
        sum=$((sum + f[11] + f[12]))
    done
    echo "$sum"
}

user_ticks() { # pids...: summed utime (clock ticks, user space only) of those still alive
    local sum=0 pid line f
    for pid in "$@"; do
        line=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        read -ra f <<<"${line##*) }"
        sum=$((sum + f[11]))
    done
    echo "$sum"
}

rss_mib() { # pid
    awk '/^VmRSS:/ { printf "%.1f", $2 / 1024; found = 1 } END { if (!found) print "?" }' \
        "/proc/$1/status" 2>/dev/null || echo "?"
}

now_s() { date +%s.%N; }

# sample_rss pid outfile: the peak RSS (MiB) of pid, sampled every 50 ms
# until the file $outfile.stop exists (reports.sh, files.sh).
sample_rss() {
    local pid=$1 out=$2 peak=0 now
    while [[ ! -e $out.stop ]]; do
        now=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        ((now > peak)) && peak=$now
        sleep 0.05
    done
    awk -v k="$peak" 'BEGIN { printf "%.1f", k / 1024 }' >"$out"
}

# ------------------------------------------------------- servers (drover) --
server_log_tail() { log "---- last lines of $1 ----"; tail -n 20 "$1" >&2 || true; }

# Which servers stop_server holds to a clean exit, and whether it reports
# their ERROR log lines. users.sh and cache.sh run drover only; run.sh sets
# STOP_EXPECT_ZERO='drover*' STOP_LOG_ERRORS=0 for its baselines.
STOP_EXPECT_ZERO='*' # glob of the names that must exit 0 on SIGTERM
STOP_LOG_ERRORS=1    # 1: warn about '"level":"ERROR"' lines in $WORK/NAME.log

await_exit() { # pid tenths: wait up to tenths/10 s for pid to exit; fails if it is still alive
    local i
    for ((i = 0; i < $2; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    ! kill -0 "$1" 2>/dev/null
}

stop_server() { # name pid: SIGTERM the server, wait, report its exit status
    local name=$1 pid=$2 i rc=0 kids
    kids=$(proc_tree "$pid" | tail -n +2 | tr '\n' ' ')
    kill -TERM "$pid" 2>/dev/null || true
    if ! await_exit "$pid" "$STOP_TIMEOUT_TENTHS"; then
        log "warning: $name (pid $pid) ignored SIGTERM for 10 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    # shellcheck disable=SC2053 # STOP_EXPECT_ZERO is a glob on purpose
    if [[ $name == $STOP_EXPECT_ZERO ]] && ((rc != 0)); then
        log "warning: $name exited with status $rc after SIGTERM (expected 0)"
    fi
    for i in $kids; do # children must not outlive the server
        if kill -0 "$i" 2>/dev/null; then
            log "warning: $name child $i still alive after its parent exited; killing it"
            kill -KILL "$i" 2>/dev/null || true
        fi
    done
    ((STOP_LOG_ERRORS)) || return 0
    local errors
    errors=$(grep -c '"level":"ERROR"' "$WORK/$name.log" 2>/dev/null || true)
    if [[ ${errors:-0} != 0 ]]; then
        log "warning: $name logged $errors ERROR lines; the first ones:"
        grep '"level":"ERROR"' "$WORK/$name.log" | head -n 3 >&2 || true
    fi
}

# wait_ready name pid ready-file logfile [hint]: wait (bounded) until drover
# writes its --ready-file; sets READY_ADDR to the address it listens on
# (0.0.0.0 as 127.0.0.1). Dies, adding hint to the message, when drover exits
# first or writes no usable file.
READY_ADDR=""
wait_ready() {
    local name=$1 pid=$2 ready=$3 logf=$4 hint=${5:+ $5} addr="" i
    READY_ADDR=""
    for ((i = 0; i < WAIT_TRIES; i++)); do
        kill -0 "$pid" 2>/dev/null || { server_log_tail "$logf"; die "$name exited before it was ready$hint"; }
        if [[ -s $ready ]]; then
            addr=$(sed -n 's/.*"listen"[[:space:]]*:[[:space:]]*\[[[:space:]]*"\([^"]*\)".*/\1/p' "$ready")
            [[ -n $addr ]] && break
        fi
        sleep 0.1
    done
    [[ -n $addr ]] || { server_log_tail "$logf"; die "$name wrote no usable ready file ($ready) after $WAIT_TRIES tries$hint"; }
    READY_ADDR=${addr/0.0.0.0/127.0.0.1}
}

SRV_PID="" SRV_ADDR="" SRV_PIDS=()

# start_drover name database-url-or-empty [VAR=value...]: one worker on
# SERVER_CPU, its data in WORK/NAME; sets SRV_PID, SRV_ADDR and SRV_PIDS
# (supervisor, then its worker). users.sh and cache.sh.
start_drover() {
    local name=$1 url=$2
    shift 2
    local dir=$WORK/$name ready=$WORK/$name.ready logf=$WORK/$name.log pid
    mkdir -p "$dir"
    rm -f "$ready"
    local args=(serve --listen 127.0.0.1:0 --workers 1 --ready-file "$ready" --data-dir "$dir" --log-level warn)
    [[ -n $url ]] && args+=(--database-url "$url")
    # shellcheck disable=SC2086 # DROVER_ARGS is split on purpose
    args+=($DROVER_ARGS)
    log "== $name on CPU $SERVER_CPU: ${*:+$* }$DROVER_BIN ${args[*]}"
    # DROVER_BIN and DROVER_ARGS are the script's knobs: drover refuses unknown
    # DROVER_* variables, so they are not passed on.
    env -u DROVER_BIN -u DROVER_ARGS "$@" taskset -c "$SERVER_CPU" "$DROVER_BIN" "${args[@]}" </dev/null >"$logf" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_ready "$name" "$pid" "$ready" "$logf"
    SRV_PID=$pid
    SRV_ADDR=$READY_ADDR
    mapfile -t SRV_PIDS < <(proc_tree "$pid") # supervisor, then its worker
    STARTED+=("${SRV_PIDS[@]:1}")
    log "   listening on $SRV_ADDR; supervisor $pid, workers: ${SRV_PIDS[*]:1}"
}

# http method path [body] [token]: prints "STATUS<TAB>BODY" (to SRV_ADDR)
http() {
    local method=$1 path=$2 body=${3:-} token=${4:-} out args
    args=(-sS --max-time 5 -X "$method" -w '\t%{http_code}' "http://$SRV_ADDR$path")
    [[ -n $body ]] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
    [[ -n $token ]] && args+=(-H "Authorization: Bearer $token")
    out=$(curl "${args[@]}" 2>&1) || out="$out	000"
    printf '%s\t%s\n' "${out##*	}" "${out%	*}"
}

pg_backends() { # the PIDs of the PostgreSQL backends serving CUR_DB
    [[ -n $CUR_DB ]] || return 0
    psql_admin "SELECT pid FROM pg_stat_activity WHERE datname = '$CUR_DB'" 2>/dev/null || true
}

# ------------------------------------------------------------ wrk output --
to_ms() { # "326.00us" / "1.23ms" / "2.01s" -> milliseconds
    awk -v v="$1" 'BEGIN {
        if (!match(v, /^[0-9.]+/)) { print "n/a"; exit }
        n = substr(v, 1, RLENGTH); u = substr(v, RLENGTH + 1)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
        # wrk 4.1 sometimes prints 0.00us for the upper percentiles of a
        # pipelined run (a histogram artefact): no real latency is zero.
        if (f < 0 || n + 0 == 0) print "n/a"; else printf "%.3f", n * f
    }'
}

parse_wrk() { # key wrk-output: fill RPS, REQS, P50, P99, ERRS[key] (not CPU)
    local key=$1 out=$2 p50 p99
    RPS[$key]=$(awk '$1 == "Requests/sec:" { print $2 }' <<<"$out")
    REQS[$key]=$(awk '$2 == "requests" && $3 == "in" { print $1 }' <<<"$out")
    p50=$(awk '/Latency Distribution/ { d = 1; next } d && $1 == "50%" { print $2; exit }' <<<"$out")
    p99=$(awk '/Latency Distribution/ { d = 1; next } d && $1 == "99%" { print $2; exit }' <<<"$out")
    P50[$key]=$(to_ms "${p50:-}")
    P99[$key]=$(to_ms "${p99:-}")
    # Socket errors (connect/read/write/timeout) plus non-2xx/3xx responses.
    ERRS[$key]=$(awk '/Socket errors:/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
                      /Non-2xx or 3xx responses:/ { s += $NF } END { print s + 0 }' <<<"$out")
    RPS[$key]=${RPS[$key]:-n/a}
    REQS[$key]=${REQS[$key]:-0}
}

# ---------------------------------------------------------------- report --
ratio() { # a b -> a/b, or n/a
    awk -v a="${1:-}" -v b="${2:-}" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'
}

verdict_max() { # value max
    awk -v v="$1" -v g="$2" 'BEGIN { if (v !~ /^[0-9.]+$/) print ""; else if (v + 0 <= g + 0) print "ok"; else print "ABOVE GOAL" }'
}

# Checks every script makes before measuring: the build tools (unless
# SKIP_BUILD=1), two CPUs for the server/load split (else both share
# SERVER_CPU), and whether perf can count instructions here.
bench_preflight() {
    if [[ $SKIP_BUILD != 1 ]]; then
        for tool in flock cargo; do command -v "$tool" >/dev/null || die "$tool is required"; done
    fi
    if (($(nproc) < 2)); then
        log "warning: fewer than 2 CPUs: server and wrk share CPU $SERVER_CPU"
        LOAD_CPU=$SERVER_CPU
    fi
    perf_probe
    log "instr/req: $PERF_NOTE"
}

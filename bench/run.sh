#!/usr/bin/env bash
# drover benchmark suite: drover against the floor of its own stack (bare
# hyper), an idiomatic axum server and nginx, measured with wrk on this
# machine. See bench/README.md for what each figure means.
#
#   bash bench/run.sh                  # full run (~4 min with the defaults)
#   DURATION=3s WARMUP=1s bash bench/run.sh
#   SKIP_DROVER=1 bash bench/run.sh    # baselines only (drover not built yet)
#
# Knobs (environment variables, defaults in brackets):
#   DURATION [10s]   length of each measured wrk run
#   WARMUP [2s]      unmeasured wrk run before each measured one (0 = none)
#   CONNS [64]       wrk connections for the one-core runs
#   THREADS [1]      wrk threads for the one-core runs
#   PIPELINE [16]    pipelining depth for the "pipelined" test
#   SERVER_CPU [0]   CPU the one-core servers are pinned to (taskset -c)
#   LOAD_CPU [1]     CPU wrk is pinned to for the one-core runs
#   ALL_CONNS [CONNS*2]  wrk connections for the all-workers drover run
#   ALL_THREADS [nproc]  wrk threads for the all-workers drover run
#   ALL_WORKERS []   --workers for the all-workers run (empty: drover's default)
#   SKIP_DROVER, SKIP_FLOOR, SKIP_AXUM, SKIP_NGINX, SKIP_ALL [0]  set to 1 to skip
#   SKIP_BUILD [0]   use the binaries already built
#   DROVER_BIN [TARGET_DIR/release/drover], DROVER_ARGS [] extra `serve` args
#   TARGET_DIR [<repo>/target]; the baselines build in TARGET_DIR/bench
#   CARGO_LOCK [/tmp/drover-cargo.lock]  every cargo call runs under flock on it
#   WAIT_TRIES [100] tries (0.1 s apart) for a server to come up / answer
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh" # the shared knobs (TARGET_DIR, CARGO_LOCK, SERVER_CPU, ...), log, die, cleanup, ...

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
PIPELINE=${PIPELINE:-16}
ALL_CONNS=${ALL_CONNS:-$((CONNS * 2))}
ALL_THREADS=${ALL_THREADS:-$(nproc)}
ALL_WORKERS=${ALL_WORKERS:-}
SKIP_DROVER=${SKIP_DROVER:-0}
SKIP_FLOOR=${SKIP_FLOOR:-0}
SKIP_AXUM=${SKIP_AXUM:-0}
SKIP_NGINX=${SKIP_NGINX:-0}
SKIP_ALL=${SKIP_ALL:-0}

FLOOR_BIN=$BENCH_TARGET_DIR/release/floor
AXUM_BIN=$BENCH_TARGET_DIR/release/axum-baseline
# drover must drain and exit 0 on SIGTERM; the baselines just die of it.
STOP_EXPECT_ZERO='drover*' STOP_LOG_ERRORS=0

# ---------------------------------------------------------------- cleanup --
bench_cleanup_init drover-bench # WORK, and a trap that stops every PID in STARTED

# ------------------------------------------------------------ preflight --
command -v wrk >/dev/null || apt_install wrk      # the load generator (Debian's wrk 4.x)
if [[ $SKIP_NGINX != 1 ]]; then
    command -v nginx >/dev/null || apt_install nginx-light
fi
for tool in curl taskset pgrep awk; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
bench_preflight

# ---------------------------------------------------------------- build --
if [[ $SKIP_BUILD != 1 ]]; then
    if [[ $SKIP_DROVER != 1 ]]; then
        cargo_build "$ROOT/Cargo.toml" "$TARGET_DIR" ||
            die "drover did not build; SKIP_DROVER=1 bash bench/run.sh measures the baselines alone"
    fi
    # Standalone packages, built apart from the workspace (own lock file, own
    # target dir) so their features never unify with drover's.
    [[ $SKIP_FLOOR == 1 ]] || cargo_build "$BENCH_DIR/floor/Cargo.toml" "$BENCH_TARGET_DIR"
    [[ $SKIP_AXUM == 1 ]] || cargo_build "$BENCH_DIR/axum-baseline/Cargo.toml" "$BENCH_TARGET_DIR"
fi
[[ $SKIP_DROVER == 1 || -x $DROVER_BIN ]] || die "no drover binary at $DROVER_BIN"
[[ $SKIP_FLOOR == 1 || -x $FLOOR_BIN ]] || die "no floor binary at $FLOOR_BIN"
[[ $SKIP_AXUM == 1 || -x $AXUM_BIN ]] || die "no axum-baseline binary at $AXUM_BIN"

# ------------------------------------------------------------- helpers --
free_port() { # a port nothing listens on, below the ephemeral range wrk uses
    local port i
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + RANDOM % 12000))
        if ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

wait_http() { # url pid logfile: wait (bounded) until the server answers 200
    local i
    for ((i = 0; i < WAIT_TRIES; i++)); do
        kill -0 "$2" 2>/dev/null || { server_log_tail "$3"; die "server for $1 exited"; }
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    server_log_tail "$3"
    die "$1 did not answer after $WAIT_TRIES tries"
}

check_body() { # url expected-body: warn when a server answers something else
    local got
    got=$(curl -fsS --max-time 2 "$1" 2>&1) || got="(request failed: $got)"
    [[ $got == "$2" ]] || log "warning: $1 answered '$got', expected '$2': the comparison is not like for like"
}

check_bodies() { # addr tests...
    local addr=$1 test
    shift
    for test in "$@"; do
        case $test in
        json) check_body "http://$addr/bench/json" '{"message":"Hello, World!"}' ;;
        plaintext) check_body "http://$addr/bench/plaintext" 'Hello, World!' ;;
        esac
    done
}

# ------------------------------------------------------------- measure --
declare -A RPS P50 P99 ERRS REQS CPU_US INSTR
ROWS=()
RAW=$BENCH_TARGET_DIR/last-run
mkdir -p "$RAW"
rm -f "$RAW"/*.txt

# measure name test url wrk_cpu threads conns pids...
#   wrk_cpu "" = no pinning. test is json, plaintext or pipelined.
measure() {
    local name=$1 test=$2 url=$3 wrk_cpu=$4 threads=$5 conns=$6
    shift 6
    local pids=("$@") pre=() args script=()
    [[ -n $wrk_cpu ]] && pre=(taskset -c "$wrk_cpu")
    args=(-t "$threads" -c "$conns" --latency)
    if [[ $test == pipelined ]]; then
        args+=(-s "$BENCH_DIR/pipeline.lua")
        script=(-- "$PIPELINE")
    fi
    if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
        "${pre[@]}" wrk "${args[@]}" -d "$WARMUP" "$url" "${script[@]}" >/dev/null 2>&1 || true
    fi
    log "  $name $test: wrk -t$threads -c$conns -d$DURATION $url${script[*]:+ ${script[*]}}"
    local t0 t1 out rc=0
    perf_start "${pids[@]}"
    t0=$(cpu_ticks "${pids[@]}")
    out=$("${pre[@]}" wrk "${args[@]}" -d "$DURATION" "$url" "${script[@]}" 2>&1) || rc=$?
    t1=$(cpu_ticks "${pids[@]}")
    perf_stop
    printf '%s\n' "$out" >"$RAW/$name-$test.txt"
    ((rc == 0)) || log "warning: wrk exited with status $rc (output in $RAW/$name-$test.txt)"

    local key=$name/$test cpu instr
    parse_wrk "$key" "$out"
    local rps=${RPS[$key]} reqs=${REQS[$key]} p50=${P50[$key]} p99=${P99[$key]} errs=${ERRS[$key]}
    if [[ -n $reqs && $reqs -gt 0 ]]; then
        cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    else
        cpu=n/a
    fi
    instr=$(per_req_instr "$PERF_COUNT" "${reqs:-0}")
    RPS[$name/$test]=$rps
    CPU_US[$name/$test]=$cpu
    INSTR[$name/$test]=$instr
    ROWS+=("$name	$test	$rps	$p50	$p99	$cpu	$instr	$errs")
    log "    -> $rps req/s, p50/p99 $p50/$p99 ms, $cpu us CPU/req, $instr instr/req, $errs errors"
}

RSS_LINES=()
record_rss() { # label pids...
    local label=$1 pid
    shift
    for pid in "$@"; do
        RSS_LINES+=("$(printf '%-26s pid %-8s %8s MiB' "$label" "$pid" "$(rss_mib "$pid")")")
        label="  worker"
    done
}

# Three tests against one server; nginx only answers plaintext.
# url_for addr test: pipelined hits /bench/plaintext.
url_for() { if [[ $2 == pipelined ]]; then echo "http://$1/bench/plaintext"; else echo "http://$1/bench/$2"; fi; }
TESTS_ALL=(json plaintext pipelined)
TESTS_PLAIN=(plaintext pipelined)

bench_simple() { # name binary-or-command...: one process on SERVER_CPU, ARGS has @ADDR@
    local name=$1 port addr pid logf
    shift
    port=$(free_port)
    addr=127.0.0.1:$port
    logf=$WORK/$name.log
    log "== $name on CPU $SERVER_CPU, listening on $addr"
    taskset -c "$SERVER_CPU" "${@//@ADDR@/$addr}" </dev/null >"$logf" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_http "http://$addr/bench/plaintext" "$pid" "$logf"
    check_bodies "$addr" "${TESTS_ALL[@]}"
    local pids test
    mapfile -t pids < <(proc_tree "$pid")
    STARTED+=("${pids[@]:1}")
    record_rss "$name" "${pids[@]}"
    for test in "${TESTS_ALL[@]}"; do
        measure "$name" "$test" "$(url_for "$addr" "$test")" "$LOAD_CPU" "$THREADS" "$CONNS" "${pids[@]}"
    done
    stop_server "$name" "$pid"
}

bench_drover() { # name cpu-or-empty wrk-cpu-or-empty threads conns [--workers N]
    local name=$1 cpu=$2 wrk_cpu=$3 threads=$4 conns=$5
    shift 5
    local ready=$WORK/$name.ready logf=$WORK/$name.log pre=() pid addr
    [[ -n $cpu ]] && pre=(taskset -c "$cpu")
    rm -f "$ready"
    # shellcheck disable=SC2086 # DROVER_ARGS is split on purpose
    set -- "$DROVER_BIN" serve --listen 127.0.0.1:0 "$@" --ready-file "$ready" --log-level warn $DROVER_ARGS
    log "== $name${cpu:+ on CPU $cpu}: ${*}"
    # DROVER_BIN and DROVER_ARGS are this script's knobs: drover refuses unknown
    # DROVER_* variables (exit 64), so they are not passed on.
    env -u DROVER_BIN -u DROVER_ARGS "${pre[@]}" "$@" </dev/null >"$logf" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_ready "$name" "$pid" "$ready" "$logf" "(SKIP_DROVER=1 skips drover)"
    addr=$READY_ADDR
    wait_http "http://$addr/bench/plaintext" "$pid" "$logf"
    check_bodies "$addr" "${TESTS_ALL[@]}"
    local pids test
    mapfile -t pids < <(proc_tree "$pid") # supervisor, then its workers
    STARTED+=("${pids[@]:1}")
    log "   listening on $addr; supervisor $pid, workers: ${pids[*]:1}"
    record_rss "$name supervisor" "${pids[@]}"
    for test in "${TESTS_ALL[@]}"; do
        measure "$name" "$test" "$(url_for "$addr" "$test")" "$wrk_cpu" "$threads" "$conns" "${pids[@]}"
    done
    stop_server "$name" "$pid"
}

bench_nginx() {
    local name=nginx prefix=$WORK/nginx port addr pid logf=$WORK/nginx.log
    port=$(free_port)
    addr=127.0.0.1:$port
    mkdir -p "$prefix/logs" "$prefix/temp"
    sed "s/@PORT@/$port/" "$BENCH_DIR/nginx.conf" >"$prefix/nginx.conf"
    log "== nginx on CPU $SERVER_CPU, listening on $addr (prefix $prefix)"
    taskset -c "$SERVER_CPU" nginx -p "$prefix/" -e "$prefix/logs/error.log" -c "$prefix/nginx.conf" \
        </dev/null >"$logf" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_http "http://$addr/bench/plaintext" "$pid" "$logf"
    check_bodies "$addr" "${TESTS_PLAIN[@]}"
    local pids test
    mapfile -t pids < <(proc_tree "$pid") # master, then the worker
    STARTED+=("${pids[@]:1}")
    record_rss "nginx master" "${pids[@]}"
    for test in "${TESTS_PLAIN[@]}"; do
        measure "$name" "$test" "$(url_for "$addr" "$test")" "$LOAD_CPU" "$THREADS" "$CONNS" "${pids[@]}"
    done
    stop_server "$name" "$pid"
}

# ----------------------------------------------------------------- run --
log "drover bench: DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS THREADS=$THREADS PIPELINE=$PIPELINE"
log "one-core runs: servers on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU; raw wrk output in $RAW"

[[ $SKIP_DROVER == 1 ]] || bench_drover drover "$SERVER_CPU" "$LOAD_CPU" "$THREADS" "$CONNS" --workers 1
[[ $SKIP_FLOOR == 1 ]] || bench_simple floor "$FLOOR_BIN" @ADDR@
[[ $SKIP_AXUM == 1 ]] || bench_simple axum "$AXUM_BIN" @ADDR@
[[ $SKIP_NGINX == 1 ]] || bench_nginx
if [[ $SKIP_DROVER != 1 && $SKIP_ALL != 1 ]]; then
    bench_drover drover-all "" "" "$ALL_THREADS" "$ALL_CONNS" ${ALL_WORKERS:+--workers "$ALL_WORKERS"}
fi

# -------------------------------------------------------------- report --
verdict() { # value goal
    awk -v v="$1" -v g="$2" 'BEGIN { if (v == "n/a") print ""; else if (v + 0 >= g + 0) print "ok"; else print "BELOW GOAL" }'
}
ratio_line() { # label value goal
    if [[ -n $3 ]]; then
        printf '  %-52s %6s   goal >= %-5s %s\n' "$1" "$2" "$3" "$(verdict "$2" "$3")"
    else
        printf '  %-52s %6s\n' "$1" "$2"
    fi
}

report() {
    echo
    echo "drover bench  $(date -u '+%Y-%m-%d %H:%M:%SZ')  git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
        " $(nproc) CPUs  load avg $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "wrk: -d $DURATION (warm-up $WARMUP), one-core runs -t $THREADS -c $CONNS, all-workers run -t $ALL_THREADS -c $ALL_CONNS; pipelined = depth $PIPELINE"
    echo "servers drover/floor/axum/nginx: pinned to CPU $SERVER_CPU, wrk on CPU $LOAD_CPU; drover-all: unpinned, all workers"
    echo
    printf '%-11s %-10s %12s %9s %9s %12s %11s %7s\n' server test "req/s" "p50 ms" "p99 ms" "CPU us/req" "instr/req" errors
    printf '%-11s %-10s %12s %9s %9s %12s %11s %7s\n' ----------- ---------- ------------ --------- --------- ------------ ----------- -------
    local row
    for row in "${ROWS[@]}"; do
        IFS=$'\t' read -r s t r a b c i e <<<"$row"
        printf '%-11s %-10s %12s %9s %9s %12s %11s %7s\n' "$s" "$t" "$r" "$a" "$b" "$c" "$i" "$e"
    done
    echo "instr/req: $PERF_NOTE"
    echo
    echo "idle RSS after startup, before load:"
    printf '  %s\n' "${RSS_LINES[@]}"
    echo
    echo "ratios (same run; throughput: higher is better for drover):"
    ratio_line "drover json req/s / floor json req/s" "$(ratio "${RPS[drover/json]:-}" "${RPS[floor/json]:-}")" 0.90
    ratio_line "drover json req/s / axum json req/s" "$(ratio "${RPS[drover/json]:-}" "${RPS[axum/json]:-}")" 1.15
    ratio_line "drover pipelined / nginx pipelined req/s" "$(ratio "${RPS[drover/pipelined]:-}" "${RPS[nginx/pipelined]:-}")" 3.0
    ratio_line "drover plaintext / floor plaintext req/s" "$(ratio "${RPS[drover/plaintext]:-}" "${RPS[floor/plaintext]:-}")" ""
    ratio_line "drover plaintext / nginx plaintext req/s" "$(ratio "${RPS[drover/plaintext]:-}" "${RPS[nginx/plaintext]:-}")" ""
    echo "ratios on CPU time per request (other's CPU/req over drover's: higher is better for drover):"
    ratio_line "floor json CPU/req / drover json CPU/req" "$(ratio "${CPU_US[floor/json]:-}" "${CPU_US[drover/json]:-}")" 0.90
    ratio_line "axum json CPU/req / drover json CPU/req" "$(ratio "${CPU_US[axum/json]:-}" "${CPU_US[drover/json]:-}")" 1.15
    ratio_line "nginx pipelined CPU/req / drover pipelined CPU/req" "$(ratio "${CPU_US[nginx/pipelined]:-}" "${CPU_US[drover/pipelined]:-}")" 3.0
    ratio_line "floor plaintext CPU/req / drover plaintext CPU/req" "$(ratio "${CPU_US[floor/plaintext]:-}" "${CPU_US[drover/plaintext]:-}")" ""
    echo "ratios on instructions per request (other's instr/req over drover's: higher is better for drover):"
    ratio_line "floor json instr/req / drover json instr/req" "$(ratio "${INSTR[floor/json]:-}" "${INSTR[drover/json]:-}")" 0.90
    ratio_line "axum json instr/req / drover json instr/req" "$(ratio "${INSTR[axum/json]:-}" "${INSTR[drover/json]:-}")" 1.15
    ratio_line "nginx pipelined / drover pipelined instr/req" "$(ratio "${INSTR[nginx/pipelined]:-}" "${INSTR[drover/pipelined]:-}")" 3.0
    ratio_line "floor plaintext / drover plaintext instr/req" "$(ratio "${INSTR[floor/plaintext]:-}" "${INSTR[drover/plaintext]:-}")" ""
    if [[ $SKIP_DROVER != 1 && $SKIP_ALL != 1 ]]; then
        echo "scaling (drover-all over drover with one worker):"
        ratio_line "json req/s" "$(ratio "${RPS[drover-all/json]:-}" "${RPS[drover/json]:-}")" ""
        ratio_line "pipelined req/s" "$(ratio "${RPS[drover-all/pipelined]:-}" "${RPS[drover/pipelined]:-}")" ""
    fi
    echo
    echo "note: each server was measured minutes after the one before, so these ratios carry the"
    echo "machine's drift. bash bench/json-rounds.sh measures the json goals in interleaved rounds."
}

report | tee "$RAW/report.txt"

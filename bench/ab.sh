#!/usr/bin/env bash
# Two builds of drover side by side: is a change free on the hot path?
# Both run one worker pinned to the same CPU and wrk loads them in turn,
# ROUNDS times, starting each round with the other build, so the drift of a
# shared VM cancels out of every round's ratio (run.sh measures builds
# minutes apart). Prints each round and the medians.
#
#   git worktree add /tmp/drover-base HEAD~1
#   cargo build --release --manifest-path /tmp/drover-base/Cargo.toml --target-dir /tmp/drover-base/target
#   BASE_BIN=/tmp/drover-base/target/release/drover bash bench/ab.sh
#   TEST=json ROUNDS=5 BASE_BIN=... bash bench/ab.sh
#
# Knobs (defaults in brackets): BASE_BIN (required: the build to compare
# with), DROVER_BIN [TARGET_DIR/release/drover], TEST [pipelined: plaintext
# pipelined PIPELINE deep; or plaintext, json], PIPELINE [16], ROUNDS [9],
# ROUND_TIME [3s], WARMUP [2s, once per build], CONNS [64], SERVER_CPU [0],
# LOAD_CPU [1], SKIP_BUILD [0], TARGET_DIR, CARGO_LOCK, WAIT_TRIES as in run.sh.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh" # the shared knobs (TARGET_DIR, CARGO_LOCK, SERVER_CPU, ...), log, die, cleanup, ...
BASE_BIN=${BASE_BIN:-}
TEST=${TEST:-pipelined}
PIPELINE=${PIPELINE:-16}
ROUNDS=${ROUNDS:-9}
ROUND_TIME=${ROUND_TIME:-3s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-64}
STOP_EXPECT_ZERO='*' STOP_LOG_ERRORS=0
bench_cleanup_init drover-ab

[[ -n $BASE_BIN && -x $BASE_BIN ]] || die "set BASE_BIN to the drover executable to compare with (see the comment at the top)"
case $TEST in
    pipelined) PATH_=/bench/plaintext WRK_SCRIPT=(-s "$BENCH_DIR/pipeline.lua") SCRIPT_ARGS=(-- "$PIPELINE") ;;
    plaintext | json) PATH_=/bench/$TEST WRK_SCRIPT=() SCRIPT_ARGS=() ;;
    *) die "TEST is pipelined, plaintext or json, not '$TEST'" ;;
esac
command -v wrk >/dev/null || apt_install wrk
bench_preflight
[[ $SKIP_BUILD == 1 ]] || cargo_build "$ROOT/Cargo.toml" "$TARGET_DIR"
[[ -x $DROVER_BIN ]] || die "no drover binary at $DROVER_BIN"

declare -A ADDR PIDS
NEW_BIN=$DROVER_BIN
for build in base new; do
    if [[ $build == base ]]; then DROVER_BIN=$BASE_BIN; else DROVER_BIN=$NEW_BIN; fi
    # Two servers at once: each its own admin port.
    start_drover "$build" "" DROVER_SERVER__ADMIN_LISTEN=127.0.0.1:0 "DROVER_SERVER__CONTROL_SOCKET=$WORK/$build.sock"
    ADDR[$build]=$SRV_ADDR
    PIDS[$build]="${SRV_PIDS[*]}"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$WARMUP" "${WRK_SCRIPT[@]}" "http://$SRV_ADDR$PATH_" "${SCRIPT_ARGS[@]}" >/dev/null 2>&1 || true
done

declare -A R C U RPS REQS P50 P99 ERRS # R[build/round] req/s, C[...] CPU us/req, U[...] user CPU us/req; the rest for parse_wrk
one_run() { # build round
    local build=$1 round=$2 out t0 t1 u0 u1 key=$1/$2
    # shellcheck disable=SC2086 # PIDS holds a list
    t0=$(cpu_ticks ${PIDS[$build]}) u0=$(user_ticks ${PIDS[$build]})
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$ROUND_TIME" "${WRK_SCRIPT[@]}" "http://${ADDR[$build]}$PATH_" "${SCRIPT_ARGS[@]}" 2>&1)
    # shellcheck disable=SC2086
    t1=$(cpu_ticks ${PIDS[$build]}) u1=$(user_ticks ${PIDS[$build]})
    parse_wrk "$key" "$out"
    [[ ${ERRS[$key]:-0} == 0 ]] || log "warning: $build round $round: ${ERRS[$key]} errors"
    R[$key]=${RPS[$key]}
    C[$key]=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${REQS[$key]}" 'BEGIN { printf "%.3f", t / hz * 1e6 / n }')
    U[$key]=$(awk -v t=$((u1 - u0)) -v hz="$CLK_TCK" -v n="${REQS[$key]}" 'BEGIN { printf "%.3f", t / hz * 1e6 / n }')
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

log "$ROUNDS rounds of $ROUND_TIME per build, $TEST, wrk -t1 -c$CONNS on CPU $LOAD_CPU"
LINES=()
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=(base new); else order=(new base); fi
    for build in "${order[@]}"; do one_run "$build" "$round"; done
    b=base/$round n=new/$round
    LINES+=("$(printf '%5s %10.0f %10.0f %8s %8s %7s %7s %8s %8s %7s' "$round" "${R[$b]}" "${R[$n]}" "${C[$b]}" "${C[$n]}" \
        "$(ratio "${R[$n]}" "${R[$b]}")" "$(ratio "${C[$n]}" "${C[$b]}")" "${U[$b]}" "${U[$n]}" "$(ratio "${U[$n]}" "${U[$b]}")")")
    log "${LINES[-1]}"
done
for build in base new; do
    # shellcheck disable=SC2086
    stop_server "$build" ${PIDS[$build]%% *}
done

col() { printf '%s\n' "${LINES[@]}" | awk -v c="$1" '{ print $c }' | median; }
echo
echo "drover ab  $(date -u '+%Y-%m-%d %H:%M:%SZ')  load avg $(cut -d' ' -f1-3 /proc/loadavg)"
echo "base: $BASE_BIN"
echo "new:  $NEW_BIN"
echo "$TEST ($PATH_${WRK_SCRIPT[*]:+, pipelined $PIPELINE deep}), $ROUNDS rounds x $ROUND_TIME per build, servers on CPU $SERVER_CPU, wrk -t1 -c$CONNS on CPU $LOAD_CPU"
echo
printf '%5s %10s %10s %8s %8s %7s %7s %8s %8s %7s\n' round "base r/s" "new r/s" "base us" "new us" "n/b r/s" "n/b us" "base usr" "new usr" "n/b usr"
printf '%s\n' "${LINES[@]}"
printf '%5s %10s %10s %8s %8s %7s %7s %8s %8s %7s\n' median "$(col 2)" "$(col 3)" "$(col 4)" "$(col 5)" "$(col 6)" "$(col 7)" "$(col 8)" "$(col 9)" "$(col 10)"
echo
echo "r/s: wrk's Requests/sec; us: the server's CPU time per request (utime+stime of supervisor and worker);"
echo "usr: its user-space part (utime) alone."
echo "n/b: new over base in the same round; r/s above 1 and us below 1 mean the new build is faster."

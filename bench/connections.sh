#!/usr/bin/env bash
# Held connections: what an idle keep-alive connection costs drover, and
# whether drover still serves at speed while it holds very many of them.
#
# Starts `drover serve` with enough workers for HELD connections (a process
# may have at most `ulimit -Hn` open files, 20,000 on these machines), then:
#   1. /bench/json with ACTIVE connections (wrk), none held: requests/s, p99;
#   2. opens HELD keep-alive connections, one GET each, from several client
#      processes (bench/hold), each from its own loopback source address
#      (127.0.0.2, 127.0.0.3, ...) to pass the ephemeral-port limit of one;
#   3. with them held: the workers' RSS growth per connection, the kernel's
#      (slab and socket-buffer memory from /proc), and the same wrk run;
#   4. has every client send a second GET on every 100th held connection
#      (held idle connections must still be served), closes them all, and
#      prints the figures, the goals of issue 14, and whether 1,000,000 such
#      connections fit in this machine's memory.
#
#   bash bench/connections.sh                  # 100,000 held, ~2 minutes plus the build
#   HELD=20000 DURATION=3s bash bench/connections.sh
#
# Needs wrk (installed with apt-get if missing), curl and awk. Builds drover
# and bench/hold (a small Rust client, into target/bench) unless SKIP_BUILD=1.
#
# Knobs (environment variables, defaults in brackets):
#   HELD [100000]      idle connections to hold
#   PER_CLIENT [16000] connections per client process (one source address each)
#   WORKERS [enough]   drover workers; by default HELD / 16,000, rounded up
#   ACTIVE [64]        wrk connections for the throughput runs
#   THREADS [2]        wrk threads
#   DURATION [5s], WARMUP [2s]   wrk run lengths
#   SETTLE [3]         seconds to wait once all are held, before measuring memory
#   HOLD_MAX [600]     clients give up holding after this many seconds anyway
#   SKIP_BUILD [0], TARGET_DIR, CARGO_LOCK, WAIT_TRIES
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

HELD=${HELD:-100000}
PER_CLIENT=${PER_CLIENT:-16000}
WORKERS=${WORKERS:-$(((HELD + 15999) / 16000))}
ACTIVE=${ACTIVE:-64}
THREADS=${THREADS:-2}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-2s}
SETTLE=${SETTLE:-3}
HOLD_MAX=${HOLD_MAX:-600}
HOLD_BIN=$BENCH_TARGET_DIR/release/hold

bench_cleanup_init drover-connections-bench

command -v wrk >/dev/null || apt_install wrk
for tool in curl awk pgrep; do command -v "$tool" >/dev/null || die "$tool is required"; done
((WORKERS >= 1)) || WORKERS=1

NOFILE=$(ulimit -Hn)
[[ $NOFILE == unlimited ]] && NOFILE=1048576
ulimit -n "$NOFILE"
((PER_CLIENT + 64 <= NOFILE)) || die "PER_CLIENT=$PER_CLIENT does not fit the open-file limit ($NOFILE)"
# Each worker may use every descriptor it has but a few; SO_REUSEPORT spreads
# the connections evenly enough that WORKERS x 16,000 leaves room.
MAX_CONNS=$((NOFILE - 100))
PER_WORKER=$(((HELD + WORKERS - 1) / WORKERS))
((PER_WORKER + ACTIVE + 500 <= MAX_CONNS)) ||
    die "$HELD connections over $WORKERS workers is $PER_WORKER each, too close to the $NOFILE open-file limit: raise WORKERS"

if [[ $SKIP_BUILD != 1 ]]; then
    log "+ flock $CARGO_LOCK cargo build --release (in $ROOT)"
    (cd "$ROOT" && flock "$CARGO_LOCK" cargo build --release --target-dir "$TARGET_DIR") || die "drover did not build"
    cargo_build "$BENCH_DIR/hold/Cargo.toml" "$BENCH_TARGET_DIR" || die "bench/hold did not build"
fi
for bin in "$DROVER_BIN" "$HOLD_BIN"; do [[ -x $bin ]] || die "no binary at $bin"; done

# ------------------------------------------------------------- measuring --
kib_of() { awk -v k="$2:" '$1 == k { print $2; exit }' "$1" 2>/dev/null || echo 0; } # file key
rss_kib() { # pids...: summed VmRSS in KiB
    local sum=0 pid v
    for pid in "$@"; do
        v=$(kib_of "/proc/$pid/status" VmRSS)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}
sock_pages() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }
tcp_inuse() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "inuse") print $(i + 1) }' /proc/net/sockstat; }
slab_kib() { kib_of /proc/meminfo Slab; }
per_conn() { awk -v d="$1" -v n="$2" 'BEGIN { if (n > 0) printf "%.0f", d * 1024 / n; else print "n/a" }'; } # kib count -> bytes

declare -A RPS=() REQS=() P50=() P99=() ERRS=()
wrk_run() { # key: one measured run on /bench/json
    local out
    out=$(wrk -t "$THREADS" -c "$ACTIVE" -d "$DURATION" --latency "http://$ADDR/bench/json" 2>&1) ||
        log "warning: wrk exited with an error for $1"
    parse_wrk "$1" "$out"
    ((ERRS[$1] == 0)) || log "warning: $1: ${ERRS[$1]} errors (non-2xx or socket)"
    log "   $1: ${RPS[$1]} req/s, p99 ${P99[$1]} ms"
}

# ---------------------------------------------------------------- drover --
READY=$WORK/drover.ready
args=(serve --listen 127.0.0.1:0 --workers "$WORKERS" --ready-file "$READY" --data-dir "$WORK/data"
    --admin-listen "" --control-socket "$WORK/drover.sock" --log-level warn)
log "== drover: $WORKERS workers, open-file limit $NOFILE, http.max_connections $MAX_CONNS, keep-alive $((HOLD_MAX + 60))s"
env -u DROVER_BIN -u DROVER_ARGS DROVER_HTTP__MAX_CONNECTIONS="$MAX_CONNS" \
    DROVER_HTTP__KEEP_ALIVE_TIMEOUT="$((HOLD_MAX + 60))s" \
    "$DROVER_BIN" "${args[@]}" </dev/null >"$WORK/drover.log" 2>&1 &
SUP=$!
STARTED+=("$SUP")
wait_ready drover "$SUP" "$READY" "$WORK/drover.log"
ADDR=$READY_ADDR
mapfile -t WORKER_PIDS < <(proc_tree "$SUP" | tail -n +2)
STARTED+=("${WORKER_PIDS[@]}")
((${#WORKER_PIDS[@]} == WORKERS)) || die "expected $WORKERS workers under $SUP, found ${#WORKER_PIDS[@]}"
log "   $ADDR; supervisor $SUP, workers ${WORKER_PIDS[*]}"

log "== /bench/json, $ACTIVE connections, none held"
wrk -t "$THREADS" -c "$ACTIVE" -d "$WARMUP" "http://$ADDR/bench/json" >/dev/null 2>&1 || true
wrk_run idle
sleep 1

RSS0=$(rss_kib "${WORKER_PIDS[@]}")
SUP_RSS0=$(rss_kib "$SUP")
SLAB0=$(slab_kib)
SOCK0=$(sock_pages)
INUSE0=$(tcp_inuse)

# ----------------------------------------------------------- hold clients --
CLIENTS=$(((HELD + PER_CLIENT - 1) / PER_CLIENT))
((CLIENTS <= 250)) || die "too many client processes ($CLIENTS): raise PER_CLIENT"
log "== holding $HELD connections from $CLIENTS clients (127.0.0.2 to 127.0.0.$((CLIENTS + 1)))"
CLIENT_PIDS=()
t0=$(now_s)
left=$HELD
for ((c = 0; c < CLIENTS; c++)); do
    n=$((left < PER_CLIENT ? left : PER_CLIENT))
    left=$((left - n))
    mkfifo "$WORK/go.$c"
    "$HOLD_BIN" "$ADDR" "127.0.0.$((c + 2))" "$n" --hold-max "$HOLD_MAX" <"$WORK/go.$c" >"$WORK/hold.$c.out" 2>"$WORK/hold.$c.err" &
    CLIENT_PIDS+=("$!")
    STARTED+=("$!")
    # Held open for writing here, so the client waits until told.
    eval "exec {fd_$c}>\"$WORK/go.$c\""
done
for ((c = 0; c < CLIENTS; c++)); do
    for ((i = 0; i < 1200; i++)); do # up to 2 minutes each
        grep -q '^held' "$WORK/hold.$c.out" 2>/dev/null && break
        if ! kill -0 "${CLIENT_PIDS[$c]}" 2>/dev/null; then
            cat "$WORK/hold.$c.err" >&2
            die "client $c exited before holding its connections: $(cat "$WORK/hold.$c.out")"
        fi
        sleep 0.1
    done
    grep -q '^held' "$WORK/hold.$c.out" || die "client $c did not finish connecting in 2 minutes"
done
t1=$(now_s)
log "   all held after $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s; settling ${SETTLE}s"
IDLE_T0=$(cpu_ticks "${WORKER_PIDS[@]}")
sleep "$SETTLE"
IDLE_T1=$(cpu_ticks "${WORKER_PIDS[@]}")

RSS1=$(rss_kib "${WORKER_PIDS[@]}")
SUP_RSS1=$(rss_kib "$SUP")
SLAB1=$(slab_kib)
SOCK1=$(sock_pages)
INUSE1=$(tcp_inuse)
for pid in "${WORKER_PIDS[@]}"; do
    log "   worker $pid: $(ls "/proc/$pid/fd" 2>/dev/null | wc -l) open files, RSS $(rss_mib "$pid") MiB"
done

log "== /bench/json, $ACTIVE connections, $HELD held"
wrk_run held

# -------------------------------------------------------------- release --
log "== releasing: every client re-asks on every 100th connection, then closes"
for ((c = 0; c < CLIENTS; c++)); do eval "exec {fd_$c}>&-"; done
RECHECK_OK=0 RECHECK_FAILED=0
for ((c = 0; c < CLIENTS; c++)); do
    if ! await_exit "${CLIENT_PIDS[$c]}" 600; then
        log "warning: client $c did not exit in 60 s; killing it"
        kill -KILL "${CLIENT_PIDS[$c]}" 2>/dev/null || true
    fi
    wait "${CLIENT_PIDS[$c]}" 2>/dev/null || log "warning: client $c: $(tail -n 3 "$WORK/hold.$c.err" | tr '\n' ' ')"
    line=$(grep '^recheck' "$WORK/hold.$c.out" || echo "recheck ok=0 failed=?")
    ok=${line#*ok=}
    ok=${ok%% *}
    failed=${line##*failed=}
    RECHECK_OK=$((RECHECK_OK + ok))
    [[ $failed =~ ^[0-9]+$ ]] && RECHECK_FAILED=$((RECHECK_FAILED + failed)) || RECHECK_FAILED=$((RECHECK_FAILED + 1))
done
STOP_LOG_ERRORS=1 stop_server drover "$SUP"

# --------------------------------------------------------------- report --
USER_B=$(per_conn $((RSS1 - RSS0)) "$HELD")
SLAB_B=$(per_conn $((SLAB1 - SLAB0)) "$HELD")
SOCK_B=$(per_conn $(((SOCK1 - SOCK0) * 4)) "$HELD")
MEM_TOTAL=$(kib_of /proc/meminfo MemTotal)
RATIO=$(ratio "${RPS[held]}" "${RPS[idle]}")
fits=$(awk -v u="$USER_B" -v k="$SLAB_B" -v s="$SOCK_B" -v t="$MEM_TOTAL" 'BEGIN {
    per = u + k + s; need = per * 1e6 / 1024 / 1024 / 1024; have = t / 1024 / 1024
    printf "%.1f GiB (%.0f B per connection) of %.1f GiB: %s", need, per, have, (need < have) ? "fits" : "DOES NOT FIT" }')

cat <<EOF

drover, $WORKERS workers: $HELD idle keep-alive connections held (TCP sockets in use: $INUSE0 -> $INUSE1)
  user space, workers' RSS:   $((RSS0 / 1024)) -> $((RSS1 / 1024)) MiB   = $USER_B B per connection   (goal <= 4096: $(verdict_max "$USER_B" 4096))
  supervisor RSS:             $((SUP_RSS0 / 1024)) -> $((SUP_RSS1 / 1024)) MiB
  workers' CPU while they idle: $(awk -v t=$((IDLE_T1 - IDLE_T0)) -v hz="$CLK_TCK" -v s="$SETTLE" 'BEGIN { printf "%.1f%% of one core", t / hz / s * 100 }') (over ${SETTLE}s)
  kernel slab (both ends):    $((SLAB0 / 1024)) -> $((SLAB1 / 1024)) MiB   = $SLAB_B B per connection (the client's socket included)
  kernel socket buffers:      $SOCK0 -> $SOCK1 pages  = $SOCK_B B per connection
  1,000,000 connections at these figures (user + kernel, both ends): $fits
/bench/json, $ACTIVE connections, wrk -t $THREADS, $DURATION:
  none held:  ${RPS[idle]} req/s, p99 ${P99[idle]} ms
  $HELD held: ${RPS[held]} req/s, p99 ${P99[held]} ms   ratio $RATIO (goal >= 0.80)
held connections re-asked after holding: $RECHECK_OK answered 200, $RECHECK_FAILED failed
EOF
((RECHECK_FAILED == 0)) || exit 1

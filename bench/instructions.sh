#!/usr/bin/env bash
# User-space instructions per request of drover builds, counted by valgrind's
# callgrind: repeatable to a fraction of a percent whatever else the machine
# is doing, where CPU time on this shared VM moves by 25% between runs. Use
# it to tell what a change costs on the hot path; the time figures of the
# other scripts say what a request costs in all (the kernel included, which
# callgrind does not see).
#
#   bash bench/instructions.sh                                  # target/release/drover
#   bash bench/instructions.sh /tmp/base/drover target/release/drover
#   REQUESTS=32000 PATH_=/bench/plaintext bash bench/instructions.sh
#
# For each executable: `drover serve --workers 1` runs under callgrind with
# instrumentation off; after a warm-up of 2,000 requests it is switched on
# in the worker for REQUESTS requests of PATH_ over CONNS keep-alive
# connections (a small Python client sends one request on each and reads
# every answer, in turn), switched off, and the worker's count is divided by
# REQUESTS. Needs valgrind (`apt-get install -y valgrind`, installed if
# missing) and python3. Knobs: REQUESTS [16000], CONNS [8], PATH_
# [/bench/json], SKIP_BUILD [0], TARGET_DIR, CARGO_LOCK.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
REQUESTS=${REQUESTS:-16000}
CONNS=${CONNS:-8}
PATH_=${PATH_:-/bench/json}
bench_cleanup_init drover-instructions

command -v valgrind >/dev/null || apt_install valgrind
command -v python3 >/dev/null || die "python3 is required"
BINS=("$@")
if ((${#BINS[@]} == 0)); then
    [[ $SKIP_BUILD == 1 ]] || cargo_build "$ROOT/Cargo.toml" "$TARGET_DIR"
    BINS=("$DROVER_BIN")
fi

# load addr count conns: sends count requests of PATH_ over conns connections
load() {
    python3 - "$1" "$2" "$3" "$PATH_" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(':', 1)
count, conns, path = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sockets = [socket.create_connection((host, int(port))) for _ in range(conns)]
request = f"GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n".encode()
def answer(s):
    data = b""
    while True:
        data += s.recv(65536)
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
            if len(body) >= length:
                return
for _ in range(count // conns):
    for s in sockets:
        s.sendall(request)
    for s in sockets:
        answer(s)
PY
}

RESULTS=()
for bin in "${BINS[@]}"; do
    [[ -x $bin ]] || die "no executable at $bin"
    dir=$WORK/run.$RANDOM
    mkdir -p "$dir"
    log "== $bin under callgrind"
    DROVER_WORKER__BOOT_TIMEOUT=300s valgrind --tool=callgrind --trace-children=yes --instr-atstart=no \
        "--callgrind-out-file=$dir/cg.%p" "$bin" serve --listen 127.0.0.1:0 --workers 1 --ready-file "$dir/ready" \
        --data-dir "$dir/data" --admin-listen "" --control-socket "$dir/sock" --log-level warn \
        </dev/null >"$dir/log" 2>&1 &
    sup=$!
    STARTED+=("$sup")
    WAIT_TRIES=3000 wait_ready drover "$sup" "$dir/ready" "$dir/log"
    worker=$(pgrep -P "$sup" | head -n 1)
    STARTED+=("$worker")
    load "$READY_ADDR" 2000 "$CONNS"
    callgrind_control -i on "$worker" >/dev/null
    load "$READY_ADDR" "$REQUESTS" "$CONNS"
    callgrind_control -i off "$worker" >/dev/null
    callgrind_control -d "$worker" >/dev/null
    total=$(awk '$1 == "totals:" { print $2 }' "$dir/cg.$worker.1")
    STOP_LOG_ERRORS=0 stop_server drover "$sup"
    per=$((total / REQUESTS))
    RESULTS+=("$(printf '%10s  %s' "$per" "$bin")")
    log "   $per instructions per request"
done

echo
echo "user-space instructions per request of GET $PATH_ in the worker (callgrind, $REQUESTS requests over $CONNS connections)"
printf '%s\n' "${RESULTS[@]}"

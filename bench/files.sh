#!/usr/bin/env bash
# drover files bench: memory and speed of PUT and GET /v1/files/{name} with a
# large file, on the local store and on S3 (moto's server), beside nginx
# serving the same file from disk as the reference.
#
# One worker on SERVER_CPU (SQLite). For each store: curl on LOAD_CPU
# uploads SIZE_MB of random bytes (curl -T: PUT with Content-Length), then
# downloads it to /dev/null, while the worker's RSS is sampled every 50 ms:
# seconds, MB/s, the worker's RSS before and at its peak, and its growth.
# Then nginx on SERVER_CPU serves the same file from disk and curl copies it
# to /dev/null: the throughput a plain static file server gets here.
# Goal (issue 12): uploading and downloading a 1 GiB file grows the worker's
# RSS by less than 32 MiB, on both stores.
#
#   bash bench/files.sh                    # ~1-2 min plus the build
#   SIZE_MB=256 SKIP_BUILD=1 bash bench/files.sh
#
# Knobs (environment variables, defaults in brackets):
#   SIZE_MB [1024]     the file's size
#   SKIP_S3 [0]        1: the local store only (moto keeps objects in memory
#                      and is slow: its figures are moto's, not S3's)
#   SKIP_NGINX [0]     1: no nginx reference (installed with apt when missing)
#   SERVER_CPU [0] LOAD_CPU [1] SKIP_BUILD [0] TARGET_DIR CARGO_LOCK DROVER_BIN
#                      as in the other scripts (bench/lib.sh)
# moto's server is installed with `python3 -m pip install 'moto[server]'`
# when missing.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

SIZE_MB=${SIZE_MB:-1024}
SKIP_S3=${SKIP_S3:-0}
SKIP_NGINX=${SKIP_NGINX:-0}

bench_cleanup_init drover-files-bench
for tool in curl taskset awk python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
if [[ $SKIP_S3 != 1 ]] && ! command -v moto_server >/dev/null; then
    log "+ python3 -m pip install 'moto[server]'"
    python3 -m pip install --quiet 'moto[server]' >&2 || die "could not install moto"
    hash -r
fi
if [[ $SKIP_NGINX != 1 ]] && ! command -v nginx >/dev/null; then
    apt_install nginx-light
fi
bench_preflight
[[ $SKIP_BUILD == 1 ]] || cargo_build "$ROOT/Cargo.toml" "$TARGET_DIR"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

FILE=$WORK/static/big.bin
mkdir -p "$WORK/static"
log "== $SIZE_MB MiB of random bytes in $FILE"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$FILE"
BYTES=$(stat -c %s "$FILE")

# sample_rss pid outfile: the peak RSS (MiB) of pid, sampled every 50 ms
# until the file $outfile.stop exists.
sample_rss() {
    local pid=$1 out=$2 peak=0 now
    while [[ ! -e $out.stop ]]; do
        now=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        ((now > peak)) && peak=$now
        sleep 0.05
    done
    awk -v k="$peak" 'BEGIN { printf "%.1f", k / 1024 }' >"$out"
}

declare -A FIG FRESH
# timed name pid curl-args...: runs curl on LOAD_CPU while sampling pid's
# RSS (pid 0: none); records "seconds MB/s rss-before rss-peak growth".
timed() {
    local name=$1 pid=$2
    shift 2
    local before=0 peak=0 out=$WORK/$name.rss stats sampler=""
    if [[ $pid != 0 ]]; then
        before=$(rss_mib "$pid")
        rm -f "$out.stop"
        sample_rss "$pid" "$out" &
        sampler=$!
    fi
    stats=$(taskset -c "$LOAD_CPU" curl -sS -o /dev/null -w '%{http_code} %{time_total}' "$@") ||
        die "$name: curl failed"
    if [[ -n $sampler ]]; then
        touch "$out.stop"
        wait "$sampler"
        peak=$(<"$out")
    fi
    read -r code secs <<<"$stats"
    [[ $code == 200 || $code == 201 ]] || die "$name: HTTP $code"
    FIG[$name]=$(awk -v b="$BYTES" -v s="$secs" -v r0="$before" -v r1="$peak" -v pid="$pid" 'BEGIN {
        if (pid == 0) printf "%8.2f %9.0f %10s %10s %9s", s, b / s / 1e6, "-", "-", "-";
        else printf "%8.2f %9.0f %10.1f %10.1f %9.1f", s, b / s / 1e6, r0, r1, r1 - r0 }')
    log "   $name: ${FIG[$name]}"
}

# store_run name [VAR=value...]: drover with that store; upload, download.
store_run() {
    local name=$1
    shift
    start_drover "files-$name" "" "$@"
    local worker=${SRV_PIDS[1]}
    local ready_rss
    ready_rss=$(rss_mib "$worker")
    http POST /v1/auth/register '{"email":"bench@example.com","password":"bench password","name":"Bench"}' >/dev/null
    local login token
    login=$(http POST /v1/auth/login '{"email":"bench@example.com","password":"bench password"}')
    token=$(sed -n 's/.*"access_token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' <<<"$login")
    [[ -n $token ]] || die "no token: $login"
    # The baseline: signed in, no file handled yet. Hashing the password
    # took argon2's 19 MiB of working memory, which the allocator keeps.
    FRESH[$name]=$(rss_mib "$worker")
    # A small file first, so the worker's buffers and statements exist.
    curl -sS -o /dev/null -T "$BENCH_DIR/README.md" -H "Authorization: Bearer $token" \
        "http://$SRV_ADDR/v1/files/warm-up"
    curl -sS -o /dev/null -H "Authorization: Bearer $token" "http://$SRV_ADDR/v1/files/warm-up"
    log "   worker RSS: $ready_rss MiB when ready, ${FRESH[$name]} MiB signed in (argon2), $(rss_mib "$worker") MiB after a small upload and download"
    log "== $name: upload and download $SIZE_MB MiB (curl on CPU $LOAD_CPU)"
    timed "$name-put" "$worker" -T "$FILE" -H 'Content-Type: application/octet-stream' \
        -H "Authorization: Bearer $token" "http://$SRV_ADDR/v1/files/big.bin"
    timed "$name-get" "$worker" -H "Authorization: Bearer $token" "http://$SRV_ADDR/v1/files/big.bin"
    local digest
    digest=$(curl -sS -I -H "Authorization: Bearer $token" "http://$SRV_ADDR/v1/files/big.bin" |
        sed -n 's/^[Ee][Tt]ag: "\([0-9a-f]*\)".*/\1/p')
    [[ $digest == "$(sha256sum "$FILE" | cut -d' ' -f1)" ]] || die "$name: the stored SHA-256 is not the file's"
    stop_server "files-$name" "$SRV_PID"
}

store_run local

if [[ $SKIP_S3 != 1 ]]; then
    port=$(free_port)
    log "== moto_server on 127.0.0.1:$port"
    moto_server -H 127.0.0.1 -p "$port" >"$WORK/moto.log" 2>&1 &
    STARTED+=("$!")
    for ((i = 0; i < 100; i++)); do port_in_use "$port" && break; sleep 0.1; done
    curl -sS -o /dev/null -X PUT "http://127.0.0.1:$port/drover-bench" || die "could not create the bucket"
    store_run s3 DROVER_FILES__STORE=s3://drover-bench/files AWS_ENDPOINT_URL="http://127.0.0.1:$port" \
        AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
fi

if [[ $SKIP_NGINX != 1 ]]; then
    port=$(free_port)
    prefix=$WORK/nginx
    mkdir -p "$prefix/logs" "$prefix/temp"
    # nginx's workers run as an unprivileged user: let them reach the file.
    chmod o+x "$WORK" "$WORK/static"
    chmod o+r "$FILE"
    cat >"$prefix/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid nginx.pid;
error_log logs/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path temp/client_body;
    proxy_temp_path temp/proxy;
    fastcgi_temp_path temp/fastcgi;
    uwsgi_temp_path temp/uwsgi;
    scgi_temp_path temp/scgi;
    server { listen 127.0.0.1:$port; root $WORK/static; }
}
EOF
    log "== nginx on CPU $SERVER_CPU serving the file from disk (127.0.0.1:$port)"
    taskset -c "$SERVER_CPU" nginx -p "$prefix/" -e "$prefix/logs/error.log" -c "$prefix/nginx.conf" \
        </dev/null >"$WORK/nginx.log" 2>&1 &
    nginx_pid=$!
    STARTED+=("$nginx_pid")
    for ((i = 0; i < 100; i++)); do port_in_use "$port" && break; sleep 0.1; done
    timed nginx-get 0 "http://127.0.0.1:$port/big.bin"
    kill -TERM "$nginx_pid" 2>/dev/null || true
fi

printf '\ndrover files bench: %d MiB, 1 worker on CPU %s (SQLite), curl on CPU %s\n\n' \
    "$SIZE_MB" "$SERVER_CPU" "$LOAD_CPU"
printf '%-11s %8s %9s %10s %10s %9s\n' run seconds MB/s "RSS MiB" "peak MiB" growth
for name in local-put local-get s3-put s3-get nginx-get; do
    [[ -n ${FIG[$name]:-} ]] && printf '%-11s %s\n' "$name" "${FIG[$name]}"
done
worst=0
for name in local-put local-get s3-put s3-get; do
    [[ -n ${FIG[$name]:-} ]] || continue
    # From the worker's RSS when it was ready, not only from just before.
    growth=$(awk -v fresh="${FRESH[${name%-*}]}" '{ print $4 - fresh }' <<<"${FIG[$name]}")
    worst=$(awk -v a="$worst" -v b="$growth" 'BEGIN { print (b > a ? b : a) }')
done
for store in local s3; do
    [[ -n ${FRESH[$store]:-} ]] && printf 'worker RSS signed in, before any file (%s store): %s MiB\n' "$store" "${FRESH[$store]}"
done
printf '\ngoal: RSS peak - RSS before any file < 32 MiB on every run: worst %s MiB -> %s\n' "$worst" "$(verdict_max "$worst" 32)"
if [[ -n ${FIG[local-get]:-} && -n ${FIG[nginx-get]:-} ]]; then
    printf 'drover local download / nginx download MB/s: %s\n' \
        "$(ratio "$(awk '{ print $2 }' <<<"${FIG[local-get]}")" "$(awk '{ print $2 }' <<<"${FIG[nginx-get]}")")"
fi

#!/usr/bin/env bash
# drover jobs bench: events per second from the outbox to a stored
# notification, through the embedded queue on PostgreSQL and through
# RabbitMQ, with 1 and 2 job processes supervised by `drover serve`, and the
# delay from an event's commit to its notification.
#
# For each transport and JOB_WORKERS count, a fresh database (and for
# RabbitMQ a fresh vhost, made and deleted with rabbitmqctl) and server (one
# HTTP worker, the job processes, all on SERVER_CPU, which PostgreSQL and
# RabbitMQ share):
#   - burst: EVENTS order.placed events committed in one transaction, the
#     way orders write them; the time until the last notification is stored
#     gives events/s (each event is two messages: notifications and sales);
#   - steady: RATE events/s committed in batches every 100 ms for STEADY_SECONDS;
#     p50/p99/max of (notification stored - event committed), from the
#     rows' own timestamps (ms). jobs.poll_interval (250 ms by default) is
#     the floor of an idle consumer's delay; POLL sets it.
#   - end to end: wrk places orders over HTTP (POST /v1/orders, one
#     Idempotency-Key each, bench/orders.lua) on ORDER_CONNS connections for
#     ORDER_SECONDS; orders/s placed, then events/s from the first order to
#     the last notification stored, and p50/p99 of notification stored -
#     order committed (ms).
# The burst and the steady rate skip HTTP: they measure the job side alone.
#
#   bash bench/jobs.sh                       # ~1 min plus the build
#   EVENTS=20000 SKIP_BUILD=1 bash bench/jobs.sh
#
# Knobs (environment variables, defaults in brackets):
#   EVENTS [5000] RATE [200] STEADY_SECONDS [10] POLL [250ms] JOB_WORKERS ["1 2"]
#   TRANSPORTS ["embedded rabbitmq"]   AMQP_HOST_PORT [127.0.0.1:5672] (guest/guest)
#   ORDER_SECONDS [5] ORDER_CONNS [8]   wrk (installed with apt when missing)
#   SERVER_CPU [0,1] SKIP_BUILD [0] TARGET_DIR CARGO_LOCK DROVER_BIN,
#   PG_HOST [127.0.0.1] PG_PORT [5432] PG_USER [root] PG_ADMIN_DB [test]
#                      as in the other scripts (bench/lib.sh)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SERVER_CPU=${SERVER_CPU:-0,1}
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

EVENTS=${EVENTS:-5000}
RATE=${RATE:-200}
STEADY_SECONDS=${STEADY_SECONDS:-10}
POLL=${POLL:-250ms}
JOB_WORKERS=${JOB_WORKERS:-1 2}
TRANSPORTS=${TRANSPORTS:-embedded rabbitmq}
AMQP_HOST_PORT=${AMQP_HOST_PORT:-127.0.0.1:5672}
ORDER_SECONDS=${ORDER_SECONDS:-5}
ORDER_CONNS=${ORDER_CONNS:-8}
VHOST=
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-root}
PG_ADMIN_DB=${PG_ADMIN_DB:-test}
CUR_DB=""

bench_cleanup_init drover-jobs-bench
delete_vhost() { [[ -z $VHOST ]] || rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true; VHOST=""; }
trap 'cleanup; delete_vhost' EXIT
for tool in curl taskset psql awk; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
command -v wrk >/dev/null || apt_install wrk
bench_preflight
psql_admin 'SELECT 1' >/dev/null || die "PostgreSQL is not reachable at $PG_USER@$PG_HOST:$PG_PORT/$PG_ADMIN_DB"
[[ $SKIP_BUILD == 1 ]] || cargo_build "$ROOT/Cargo.toml" "$TARGET_DIR"

sql() { # database sql: one value per line, unaligned
    PGOPTIONS='-c client_min_messages=warning' psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$PG_HOST" \
        -p "$PG_PORT" -U "$PG_USER" -d "$1" -c "$2"
}

# events_sql database first count: SQL committing COUNT order.placed events
# for the bench user, numbered from FIRST, as OrderService writes them
# (the outbox's trigger notifies the job processes, as for orders).
events_sql() {
    local first=$2 count=$3
    printf '%s' "INSERT INTO outbox (event_id, kind, payload, created_at)
        SELECT 'bench-' || g, 'order.placed',
               json_build_object('kind', 'order.placed', 'order_id', g, 'user_id', u.id,
                   'total_amount', 100, 'currency', 'EUR',
                   'lines', json_build_array(json_build_object('product_id', p.id, 'quantity', 1)))::text,
               (extract(epoch from clock_timestamp()) * 1000)::bigint
        FROM generate_series($first, $((first + count - 1))) AS g,
             (SELECT id FROM users LIMIT 1) AS u, (SELECT id FROM products LIMIT 1) AS p"
}

declare -A RESULT
for transport in $TRANSPORTS; do
for workers in $JOB_WORKERS; do
    broker=""
    if [[ $transport == rabbitmq ]]; then
        command -v rabbitmqctl >/dev/null || die "rabbitmqctl is required for TRANSPORTS=rabbitmq"
        VHOST=drover-bench-$$-$workers
        rabbitmqctl -q add_vhost "$VHOST" >/dev/null && rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null \
            || die "could not make RabbitMQ vhost $VHOST"
        broker="amqp://guest:guest@$AMQP_HOST_PORT/$VHOST"
    fi
    db=drover_jobs_bench_${workers}_$$
    psql_admin "CREATE DATABASE \"$db\"" >/dev/null || die "could not create database $db"
    DBS_CREATED+=("$db")
    url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$db"
    CUR_DB=$db
    start_drover "jobs-$transport-$workers" "$url" DROVER_JOBS__WORKERS="$workers" DROVER_JOBS__POLL_INTERVAL="$POLL" \
        DROVER_JOBS__BROKER_URL="$broker"
    printf 'bench password\n' | "$DROVER_BIN" user create --email bench@bench.example --name Bench \
        --password-stdin --database-url "$url" >/dev/null 2>&1 || die "could not create the user"
    sql "$db" "INSERT INTO products (sku, name, price_amount, currency, on_hand, reserved, created_at, updated_at)
               VALUES ('BENCH', 'Bench', 100, 'EUR', 1000000000, 0, 0, 0)" >/dev/null

    log "== $transport, $workers job process(es): burst of $EVENTS events"
    start=$(now_s)
    sql "$db" "$(events_sql "$db" 1 "$EVENTS")" >/dev/null
    deadline=$(( $(date +%s) + 300 ))
    while :; do
        done_count=$(sql "$db" "SELECT count(*) FROM notifications")
        (( done_count >= EVENTS )) && break
        (( $(date +%s) < deadline )) || die "only $done_count of $EVENTS notifications after 300 s"
        sleep 0.05
    done
    end=$(now_s)
    # The sales messages may finish a little after the notifications.
    while [[ $(sql "$db" "SELECT count(*) FROM product_sales WHERE orders >= $EVENTS") != 1 ]]; do sleep 0.05; done
    end_all=$(now_s)
    eps=$(awk -v n="$EVENTS" -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", n / (b - a) }')
    mps=$(awk -v n="$EVENTS" -v a="$start" -v b="$end_all" 'BEGIN { printf "%.0f", 2 * n / (b - a) }')
    dead=$(env -u DROVER_BIN -u DROVER_ARGS DROVER_JOBS__BROKER_URL="$broker" "$DROVER_BIN" jobs status \
        --database-url "$url" 2>/dev/null | awk '$1 == "notifications" || $1 == "sales" { d += $3 } END { print d + 0 }')
    log "   $EVENTS notifications in $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s: $eps events/s; every message settled: $mps messages/s; dead: $dead"

    log "== $transport, $workers job process(es): $RATE events/s for $STEADY_SECONDS s"
    batch=$(( RATE / 10 ))
    (( batch > 0 )) || batch=1
    next=$(( EVENTS + 1 ))
    sql "$db" "TRUNCATE notifications" >/dev/null
    for ((tick = 0; tick < STEADY_SECONDS * 10; tick++)); do
        t0=$(now_s)
        sql "$db" "$(events_sql "$db" "$next" "$batch")" >/dev/null
        next=$(( next + batch ))
        rest=$(awk -v a="$t0" -v b="$(now_s)" 'BEGIN { r = 0.1 - (b - a); print (r > 0 ? r : 0) }')
        sleep "$rest"
    done
    sent=$(( next - EVENTS - 1 ))
    deadline=$(( $(date +%s) + 60 ))
    while (( $(sql "$db" "SELECT count(*) FROM notifications") < sent )); do
        (( $(date +%s) < deadline )) || die "the steady events were not all handled after 60 s"
        sleep 0.1
    done
    read -r p50 p99 pmax < <(sql "$db" "
        SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY n.created_at - o.created_at) || ' ' ||
               percentile_disc(0.99) WITHIN GROUP (ORDER BY n.created_at - o.created_at) || ' ' ||
               max(n.created_at - o.created_at)
        FROM notifications n JOIN outbox o ON o.event_id = n.event_id")
    log "   $sent events: commit -> notification p50 ${p50} ms, p99 ${p99} ms, max ${pmax} ms"

    log "== $transport, $workers job process(es): orders over HTTP for ${ORDER_SECONDS}s (wrk -c$ORDER_CONNS)"
    login=$(http POST /v1/auth/login '{"email":"bench@bench.example","password":"bench password"}')
    token=$(sed -n 's/.*"access_token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' <<<"$login")
    [[ -n $token ]] || die "no token: $login"
    product=$(sql "$db" "SELECT id FROM products LIMIT 1")
    sql "$db" "TRUNCATE notifications" >/dev/null
    since=$(sql "$db" "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint")
    start=$(now_s)
    wrk -t1 -c"$ORDER_CONNS" -d"${ORDER_SECONDS}s" -s "$BENCH_DIR/orders.lua" "http://$SRV_ADDR" \
        -- "$token" "$product" "$product" >"$WORK/wrk.out" 2>&1 || die "wrk failed: $(cat "$WORK/wrk.out")"
    placed_at=$(now_s)
    placed=$(sql "$db" "SELECT count(*) FROM orders")
    errors=$(awk '/Non-2xx/ { print $NF }' "$WORK/wrk.out")
    deadline=$(( $(date +%s) + 120 ))
    while (( $(sql "$db" "SELECT count(*) FROM notifications") < placed )); do
        (( $(date +%s) < deadline )) || die "the orders' notifications were not all stored after 120 s"
        sleep 0.05
    done
    end=$(now_s)
    ops=$(awk -v n="$placed" -v a="$start" -v b="$placed_at" 'BEGIN { printf "%.0f", n / (b - a) }')
    e2e=$(awk -v n="$placed" -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", n / (b - a) }')
    read -r o50 o99 < <(sql "$db" "
        SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY n.created_at - o.created_at) || ' ' ||
               percentile_disc(0.99) WITHIN GROUP (ORDER BY n.created_at - o.created_at)
        FROM notifications n JOIN outbox o ON o.event_id = n.event_id WHERE o.created_at >= $since")
    log "   $placed orders placed ($ops/s${errors:+, $errors non-2xx}); all notified after $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s: $e2e events/s end to end; order -> notification p50 ${o50} ms, p99 ${o99} ms"
    RESULT[$transport-$workers]="$eps $mps $p50 $p99 $pmax $ops $e2e $o50 $o99"
    stop_server "jobs-$transport-$workers" "$SRV_PID"
    drop_db "$db"
    delete_vhost
done
done

printf '\n%-10s %-5s | %-27s | %-18s | %-33s\n' "" "" "burst (outbox)" "steady $RATE/s" "orders over HTTP (wrk)"
printf '%-10s %-5s | %10s %16s | %8s %9s | %8s %10s %6s %6s\n' "transport" "procs" "events/s" "messages/s" \
    "p50 ms" "p99 ms" "orders/s" "events/s" "p50" "p99"
for transport in $TRANSPORTS; do
    for workers in $JOB_WORKERS; do
        read -r eps mps p50 p99 pmax ops e2e o50 o99 <<<"${RESULT[$transport-$workers]}"
        printf '%-10s %-5s | %10s %16s | %8s %9s | %8s %10s %6s %6s\n' "$transport" "$workers" "$eps" "$mps" \
            "$p50" "$p99" "$ops" "$e2e" "$o50" "$o99"
    done
done
printf '(application database PostgreSQL; burst of %s events; %s events/s steady, poll %s; CPUs %s)\n' \
    "$EVENTS" "$RATE" "$POLL" "$SERVER_CPU"

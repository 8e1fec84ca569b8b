#!/usr/bin/env python3
"""Figures of bench/overload.sh from oha's per-request SQLite files.

bench/openloop writes one line per request ("due end status"); oha --db-url writes one row per request: start, start_latency_correction
(when the request was due, with --latency-correction), end, status. A
request's latency is end minus when it was due, so time spent waiting for a
free connection in oha counts, as it would for a real client.

    overload.py capacity FILE            -> 2xx per second (closed loop)
    overload.py open FILE SECONDS C      -> one line of key=value figures
    overload.py spike FILE SPIKE_AT SPIKE_LEN NORMAL_P99_MS
"""
import sqlite3
import sys

GOOD_WITHIN = 0.5  # seconds: an answer later than this is not goodput


def rows(path):
    if path.endswith(".tsv"):
        # bench/openloop: "due end status" per line, in seconds.
        with open(path) as f:
            data = [tuple(float(x) for x in line.split()) for line in f if line.strip()]
        return sorted((due, end, int(status)) for due, end, status in data)
    db = sqlite3.connect(path)
    return db.execute(
        "SELECT COALESCE(start_latency_correction, start), end, status FROM oha ORDER BY 1"
    ).fetchall()


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100.0 * len(values)))]


def capacity(path):
    data = rows(path)
    ok = [r for r in data if 200 <= r[2] < 300]
    if not ok:
        return 0.0
    span = max(r[1] for r in data) - min(r[0] for r in data)
    return len(ok) / span


def open_loop(path, seconds, c):
    data = rows(path)
    ok = [r[1] - r[0] for r in data if 200 <= r[2] < 300]
    good = [x for x in ok if x <= GOOD_WITHIN]
    shed = sum(1 for r in data if r[2] == 503)
    other = len(data) - len(ok) - shed
    return {
        "sent_per_s": len(data) / seconds,
        "ok_per_s": len(ok) / seconds,
        "good_per_s": len(good) / seconds,
        "good_over_c": len(good) / seconds / c if c else float("nan"),
        "shed_per_s": shed / seconds,
        "other": other,
        "p50_ms": pct(ok, 50) * 1000,
        "p99_ms": pct(ok, 99) * 1000,
    }


def spike(path, spike_at, spike_len, normal_p99_ms):
    """Per-second p50/p99 of the steady stream, and how long after the
    spike ended its p99 stayed above 2x normal. Normal is the larger of the
    normal run's p99 and this stream's own p99 before the spike: the same
    load a few seconds earlier, which is what "back to normal" means when
    the machine's latency drifts between runs."""
    data = rows(path)
    t0 = data[0][0] if data else 0.0
    seconds = {}
    for due, end, status in data:
        second = int(due - t0)
        seconds.setdefault(second, []).append((end - due, status))
    before = [end - due for due, end, status in data if due - t0 < spike_at and 200 <= status < 300]
    normal_p99_ms = max(normal_p99_ms, pct(before, 99) * 1000 if before else 0.0)
    lines = [f"    normal p99 {normal_p99_ms:.1f} ms (the normal run's, or before the spike if higher)"]
    spike_end = spike_at + spike_len
    recovered_at = None
    for second in sorted(seconds):
        latencies = [lat for lat, status in seconds[second] if 200 <= status < 300]
        refused = sum(1 for _, status in seconds[second] if status == 503)
        p50, p99 = pct(latencies, 50) * 1000, pct(latencies, 99) * 1000
        mark = "spike" if spike_at <= second < spike_end else ""
        lines.append(f"    t={second:3d}s  2xx={len(latencies):6d}  503={refused:6d}  p50={p50:9.1f} ms  p99={p99:9.1f} ms  {mark}")
        if second >= spike_end:
            normal = p99 <= max(2 * normal_p99_ms, normal_p99_ms + 5) and refused == 0
            if normal and recovered_at is None:
                recovered_at = second
            elif not normal:
                recovered_at = None
    recovery = "never" if recovered_at is None else f"{recovered_at - spike_end}"
    return lines, recovery


def main():
    mode = sys.argv[1]
    if mode == "capacity":
        print(f"{capacity(sys.argv[2]):.0f}")
    elif mode == "open":
        figures = open_loop(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
        print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
    elif mode == "spike":
        lines, recovery = spike(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
        print("\n".join(lines))
        print(f"recovery_s={recovery}")
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()

//! What the supervisor tells the outside about itself: the one-line status
//! systemd shows, the request rate in it, the ready file, and workers'
//! memory from /proc.

use std::io;
use std::path::Path;

use drover_protocol::ctl::Phase;
use tokio::time::Instant;

/// Requests per second between two status ticks, from a total that never
/// goes backwards (exited workers' counts are kept in it).
pub struct RateMeter {
    last: (u64, Instant),
}

impl RateMeter {
    pub fn new(now: Instant) -> Self {
        Self { last: (0, now) }
    }

    /// The rate since the last sample.
    pub fn sample(&mut self, total: u64, now: Instant) -> f64 {
        let (last_total, last_at) = self.last;
        self.last = (total, now);
        let elapsed = now.saturating_duration_since(last_at).as_secs_f64();
        if elapsed > 0.0 {
            total.saturating_sub(last_total) as f64 / elapsed
        } else {
            0.0
        }
    }
}

/// `running: 2/2 workers ready, generation 3, 41234 req/s`.
pub fn status_line(phase: Phase, ready: usize, slots: usize, generation: u64, rate: f64) -> String {
    format!("{}: {ready}/{slots} workers ready, generation {generation}, {rate:.0} req/s", phase.as_str())
}

/// The ready file: `{"pid":..,"listen":[..]}` plus the extra fields.
pub fn ready_file(pid: u32, listen: &[String], extra: &[(String, String)]) -> String {
    let mut body = serde_json::json!({ "pid": pid, "listen": listen });
    for (key, value) in extra {
        body[key] = serde_json::Value::String(value.clone());
    }
    body.to_string()
}

/// Writes `path` so that a reader sees the old contents or the new, never
/// a part.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Resident memory of a process, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_is_requests_per_second_between_ticks() {
        let start = Instant::now();
        let mut meter = RateMeter::new(start);
        assert_eq!(meter.sample(500, start + Duration::from_millis(500)), 1000.0);
        assert_eq!(meter.sample(500, start + Duration::from_secs(1)), 0.0);
        assert_eq!(meter.sample(700, start + Duration::from_secs(1)), 0.0, "no time passed: no rate");
    }

    #[test]
    fn the_status_line_and_the_ready_file_say_what_an_operator_needs() {
        assert_eq!(
            status_line(Phase::Reloading, 1, 2, 3, 1234.4),
            "reloading: 1/2 workers ready, generation 3, 1234 req/s"
        );
        let body = ready_file(7, &["127.0.0.1:3000".into()], &[("admin".into(), "127.0.0.1:9000".into())]);
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"pid": 7, "listen": ["127.0.0.1:3000"], "admin": "127.0.0.1:9000"})
        );
    }

    #[test]
    fn this_process_has_a_resident_size() {
        assert!(rss_bytes(std::process::id()).is_some_and(|rss| rss > 0));
        assert_eq!(rss_bytes(u32::MAX), None);
    }
}

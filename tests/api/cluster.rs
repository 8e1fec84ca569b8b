//! The process model: workers, crashes, rolling restarts, shutdown.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::{get, run_load, Conn, Drover, Load};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_serves_requests() {
    let drover = Drover::start(3);
    let workers = drover.worker_pids();
    assert_eq!(workers.len(), 3, "{}", drover.log());
    // Fresh connections spread over the slots' sockets by the kernel's
    // reuseport hash; a few hundred are plenty to reach all three.
    let mut seen = HashSet::new();
    let mut slots = HashSet::new();
    for _ in 0..600 {
        let response = get(drover.addr, "/healthz").await.unwrap();
        assert_eq!(response.status, 200);
        let body = response.json();
        seen.insert(body["pid"].as_u64().unwrap() as u32);
        slots.insert(body["slot"].as_u64().unwrap());
        assert_eq!(body["generation"], 1);
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(seen, workers, "each worker's pid should answer");
    assert_eq!(slots, HashSet::from([0, 1, 2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_replaced_and_new_connections_never_fail() {
    let drover = Drover::start(2);
    let before = drover.worker_pids();
    let victim = *before.iter().next().unwrap();
    let victim_slot = slot_of(&drover, victim).await;

    // New connections throughout the crash: the dead slot's socket is held
    // by the supervisor, so connections queued on it wait for the
    // replacement instead of being refused.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = drover.addr;
    let prober = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failures) = (0u32, Vec::new());
            for _ in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match get(addr, "/healthz").await {
                    Ok(r) if r.status == 200 => ok += 1,
                    Ok(r) => failures.push(format!("status {}", r.status)),
                    Err(e) => failures.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failures)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    crate::helpers::send(victim, libc::SIGKILL);
    let after =
        drover.wait_workers(Duration::from_secs(10), |pids| pids.len() == 2 && !pids.contains(&victim));
    let replacement = *after.difference(&before).next().unwrap();
    assert_eq!(slot_of(&drover, replacement).await, victim_slot, "replaced on the same slot");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = prober.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}\n{}", drover.log());
    assert!(ok > 10);
    assert!(drover.log().contains("worker exited unexpectedly"));
}

/// Asks workers on fresh connections until `pid` answers; returns its slot.
async fn slot_of(drover: &Drover, pid: u32) -> u64 {
    for _ in 0..2_000 {
        let body = get(drover.addr, "/healthz").await.unwrap().json();
        if body["pid"].as_u64() == Some(u64::from(pid)) {
            return body["slot"].as_u64().unwrap();
        }
    }
    panic!("worker {pid} never answered");
}

/// SIGHUP under load: every worker is replaced and no request fails.
async fn reload_under_load(load: Load) {
    let drover = Drover::start(2);
    let before = drover.worker_pids();
    let stop = Arc::new(AtomicBool::new(false));
    let runner = tokio::spawn(run_load(drover.addr, load, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    drover.signal(libc::SIGHUP);
    let after =
        drover.wait_workers(Duration::from_secs(30), |pids| pids.len() == 2 && pids.is_disjoint(&before));
    // Keep the load on the new workers for a moment.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let report = runner.await.unwrap();
    report.assert_clean(&drover, 100);
    let new_pids: HashSet<u64> = after.iter().map(|&p| u64::from(p)).collect();
    assert!(report.pids.is_superset(&new_pids), "new workers answered: {:?} vs {:?}", report.pids, new_pids);
    assert!(drover.log().contains("rolling restart complete"));
    eprintln!("reload under load: {} requests, 0 failures, pids {:?}", report.ok, report.pids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_replaces_every_worker_with_zero_failed_requests() {
    reload_under_load(Load { connections: 64, ..Load::default() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_idle_keep_alive_connections_held_open_fails_nothing() {
    // Connections that sit idle between requests, across the restart: the
    // old worker must not close them under a client about to reuse them.
    reload_under_load(Load { connections: 64, pause: Duration::from_millis(150), ..Load::default() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_slow_requests_finish_then_exits_zero() {
    let mut drover = Drover::start(2);
    let workers = drover.worker_pids();
    let mut slow = Vec::new();
    for _ in 0..6 {
        let addr = drover.addr;
        slow.push(tokio::spawn(async move { get(addr, "/bench/delay/1500").await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drover.signal(libc::SIGTERM);
    for request in slow {
        let response = request.await.unwrap().expect("slow request completes");
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["delayed_ms"], 1500);
        assert!(response.closes(), "a draining worker says Connection: close");
    }
    let status = drover.wait_exit(Duration::from_secs(10)).expect("drover exits");
    assert_eq!(status.code(), Some(0), "{}", drover.log());
    for pid in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
            "worker {pid} still alive"
        );
    }
    let log = drover.log();
    assert!(log.contains("\"phase\":\"draining\""), "{log}");
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_stops_at_once() {
    let mut drover = Drover::start(1);
    let addr = drover.addr;
    let slow = tokio::spawn(async move { get(addr, "/bench/delay/10000").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drover.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    drover.signal(libc::SIGTERM);
    let status = drover.wait_exit(Duration::from_secs(5)).expect("exits at once");
    assert_ne!(status.code(), Some(0));
    assert!(slow.await.unwrap().is_err(), "the cut request fails");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_worker_closes_keep_alive_connections_gracefully() {
    let drover = Drover::start(1);
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    let first = conn.get("/healthz").await.unwrap();
    assert!(!first.closes());
    let old_pid = first.json()["pid"].as_u64().unwrap();
    drover.signal(libc::SIGHUP);
    drover.wait_log(Duration::from_secs(10), "\"draining\"");
    // The idle connection to the draining worker is still open; its next
    // response says it closes, so the client moves on without an error.
    let second = conn.get("/healthz").await.unwrap();
    assert_eq!(second.json()["pid"].as_u64(), Some(old_pid));
    assert!(second.closes());
    assert!(conn.is_closed_by_peer(Duration::from_secs(2)).await);
    let third = get(drover.addr, "/healthz").await.unwrap();
    assert_ne!(third.json()["pid"].as_u64(), Some(old_pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_is_killed_and_replaced() {
    let drover = Drover::start_with(crate::helpers::Options {
        workers: 2,
        env: vec![("DROVER_WORKER__HEARTBEAT_INTERVAL", "200ms"), ("DROVER_WORKER__STALL_TIMEOUT", "1s")],
        ..Default::default()
    });
    let before = drover.worker_pids();
    let victim = *before.iter().next().unwrap();
    // A stopped process is the purest stall: its event loop runs nothing.
    crate::helpers::send(victim, libc::SIGSTOP);
    let after =
        drover.wait_workers(Duration::from_secs(15), |pids| pids.len() == 2 && !pids.contains(&victim));
    assert_eq!(after.intersection(&before).count(), 1, "only the stalled worker was replaced");
    let log = drover.log();
    assert!(log.contains("worker event loop stalled"), "{log}");
    // The slot serves again.
    let mut seen = HashSet::new();
    for _ in 0..400 {
        seen.insert(get(drover.addr, "/healthz").await.unwrap().json()["pid"].as_u64().unwrap() as u32);
        if seen == after {
            break;
        }
    }
    assert_eq!(seen, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_recycle_after_max_requests_without_failing_a_request() {
    let drover = Drover::start_with(crate::helpers::Options {
        workers: 2,
        env: vec![
            ("DROVER_WORKER__MAX_REQUESTS", "2000"),
            ("DROVER_WORKER__MAX_REQUESTS_JITTER", "500"),
            ("DROVER_WORKER__HEARTBEAT_INTERVAL", "100ms"),
        ],
        ..Default::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let load = Load { connections: 16, max_requests_per_connection: 1_500, ..Load::default() };
    let report = run_load(drover.addr, load, stop).await;
    report.assert_clean(&drover, 1000);
    assert!(report.pids.len() > 2, "workers were recycled: {:?}", report.pids);
    assert!(drover.log().contains("worker recycled"));
}

fn ctl(drover: &Drover, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("ctl")
        .args(args)
        .arg("--control-socket")
        .arg(drover.dir.path().join("drover.sock"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_shows_status_reloads_and_stops() {
    let mut drover = Drover::start(2);
    let socket = drover.dir.path().join("drover.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "only the owner may control drover");
    for _ in 0..20 {
        get(drover.addr, "/healthz").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await; // a heartbeat carries the counts

    let status = ctl(&drover, &["status"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let text = String::from_utf8(status.stdout).unwrap();
    assert!(text.contains("running, generation 1, 2 slots"), "{text}");
    assert!(text.contains("SLOT") && text.contains("HEARTBEAT"), "{text}");
    assert_eq!(text.matches(" ready ").count(), 2, "{text}");

    let json: serde_json::Value =
        serde_json::from_slice(&ctl(&drover, &["status", "--json"]).stdout).unwrap();
    let workers = json["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let served: u64 = workers.iter().map(|w| w["requests"].as_u64().unwrap()).sum();
    assert!(served >= 20, "{json}");
    for worker in workers {
        assert!(worker["rss_bytes"].as_u64().unwrap() > 0);
        assert!(worker["last_heartbeat_ms"].as_u64().unwrap() < 5_000);
        assert!(worker["uptime_s"].as_f64().unwrap() > 0.0);
    }

    let before = drover.worker_pids();
    let reload = ctl(&drover, &["reload"]);
    assert!(reload.status.success());
    assert!(String::from_utf8_lossy(&reload.stdout).contains("rolling restart started"));
    drover.wait_workers(Duration::from_secs(20), |pids| pids.len() == 2 && pids.is_disjoint(&before));

    let stop = ctl(&drover, &["stop"]);
    assert!(stop.status.success());
    assert_eq!(drover.wait_exit(Duration::from_secs(20)).and_then(|s| s.code()), Some(0));
    assert!(!socket.exists(), "the socket file is removed on exit");
    let gone = ctl(&drover, &["status"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("is drover running?"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_2_4_1_2_under_load_fails_no_request() {
    let drover = Drover::start(2);
    let stop = Arc::new(AtomicBool::new(false));
    let load = Load { connections: 32, max_duration: Duration::from_secs(40), ..Load::default() };
    let runner = tokio::spawn(run_load(drover.addr, load, stop.clone()));
    for target in [4usize, 1, 2] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let scaled = ctl(&drover, &["scale", &target.to_string()]);
        assert!(scaled.status.success(), "{}", String::from_utf8_lossy(&scaled.stderr));
        drover.wait_workers(Duration::from_secs(20), |pids| pids.len() == target);
        // Wait until the supervisor itself says every slot is ready.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status: serde_json::Value =
                serde_json::from_slice(&ctl(&drover, &["status", "--json"]).stdout).unwrap();
            let ready =
                status["workers"].as_array().unwrap().iter().filter(|w| w["state"] == "ready").count();
            if status["slots"] == target && ready == target {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never settled at {target}: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let report = runner.await.unwrap();
    report.assert_clean(&drover, 1000);
    let log = drover.log();
    assert!(log.contains("scaled down; retired sockets closed"), "{log}");
    assert!(!log.contains("cannot steer"), "the kernel took the steering program");

    // SIGTTIN and SIGTTOU add and remove one worker.
    drover.signal(libc::SIGTTIN);
    drover.wait_workers(Duration::from_secs(20), |pids| pids.len() == 3);
    drover.signal(libc::SIGTTOU);
    drover.wait_workers(Duration::from_secs(20), |pids| pids.len() == 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_affinity_auto_pins_each_worker_to_its_own_cpu() {
    let drover = Drover::start_with(crate::helpers::Options {
        workers: 2,
        env: vec![("DROVER_WORKER__CPU_AFFINITY", "auto")],
        ..Default::default()
    });
    let allowed = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_owned()
    };
    let cpus: HashSet<String> = drover.worker_pids().into_iter().map(allowed).collect();
    let available = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(cpus.iter().all(|c| !c.contains(',') && !c.contains('-')), "one CPU each: {cpus:?}");
    assert_eq!(cpus.len(), available.min(2), "{cpus:?}");
    assert!(allowed(drover.pid).contains('-') || available == 1, "the supervisor stays unpinned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_over_max_rss_are_recycled_without_failing_a_request() {
    // Any worker is over a 1 MiB limit: each is recycled after its first
    // heartbeat, again and again, while requests flow.
    let drover = Drover::start_with(crate::helpers::Options {
        workers: 2,
        env: vec![("DROVER_WORKER__MAX_RSS", "1048576"), ("DROVER_WORKER__HEARTBEAT_INTERVAL", "200ms")],
        ..Default::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let load = Load { connections: 16, max_duration: Duration::from_secs(3), ..Load::default() };
    let report = run_load(drover.addr, load, stop).await;
    report.assert_clean(&drover, 500);
    assert!(report.pids.len() > 2, "workers were recycled: {:?}", report.pids);
    let log = drover.log();
    assert!(log.contains("\"reason\":\"max_rss\"") && log.contains("worker recycled"), "{log}");
}

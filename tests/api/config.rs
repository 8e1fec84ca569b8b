//! Configuration through the real binary: bad values exit 64 naming the key;
//! `config check` prints the effective result.

use std::process::{Command, Output};

use crate::helpers::TempDir;

fn drover(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_drover"));
    command.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn assert_usage_error(output: &Output, key: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains(key), "stderr should name {key}: {stderr}");
}

#[test]
fn bad_configuration_exits_64_naming_the_key() {
    assert_usage_error(&drover(&["serve", "--workers", "many"], &[]), "server.workers");
    assert_usage_error(&drover(&["serve", "--listen", "nowhere"], &[]), "server.listen");
    assert_usage_error(
        &drover(&["serve", "--listen", "0.0.0.0:8080", "--admin-listen", "127.0.0.1:8080"], &[]),
        "server.admin_listen",
    );
    assert_usage_error(
        &drover(&["serve"], &[("DROVER_WORKER__DRAIN_TIMEOUT", "soon")]),
        "worker.drain_timeout",
    );
    assert_usage_error(&drover(&["serve"], &[("DROVER_HTTP__MAX_HEADRS", "5")]), "http.max_headrs");

    let dir = TempDir::new("config");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[worker]\nboot_timeout = 5\n").unwrap();
    assert_usage_error(&drover(&["serve", "--config", file.to_str().unwrap()], &[]), "worker.boot_timeout");
    std::fs::write(&file, "[sever]\nworkers = 2\n").unwrap();
    assert_usage_error(&drover(&["config", "check", "--config", file.to_str().unwrap()], &[]), "sever");
    assert_usage_error(
        &drover(&["serve", "--config", "/nonexistent/drover.toml"], &[]),
        "/nonexistent/drover.toml",
    );
    for (key, value, named) in [
        ("DROVER_ADMISSION__MIN_LIMIT", "0", "admission.min_limit"),
        ("DROVER_ADMISSION__INITIAL_LIMIT", "5000", "admission.initial_limit"),
        ("DROVER_ADMISSION__MAX_WAIT", "0s", "admission.max_wait"),
        ("DROVER_ADMISSION__EXEMPT", "[\"healthz\"]", "admission.exempt"),
        ("DROVER_ADMISSION__QUEUE", "-1", "admission.queue"),
        ("DROVER_HTTP__COMPRESSION__ALGORITHMS", "[\"deflate\"]", "http.compression.algorithms"),
        ("DROVER_HTTP__COMPRESSION__ALGORITHMS", "[]", "http.compression.algorithms"),
        ("DROVER_HTTP__COMPRESSION__BR_LEVEL", "12", "http.compression.br_level"),
        ("DROVER_HTTP__COMPRESSION__CONTENT_TYPES", "[\"image/png\"]", "http.compression.content_types"),
        ("DROVER_HTTP__COMPRESSION__OFF_ROUTES", "[\"v1/users\"]", "http.compression.off_routes"),
        ("DROVER_REPORTS__MAX_RUNNING", "0", "reports.max_running"),
        ("DROVER_WORKER__IDLE_CGROUP", "drover-idle", "worker.idle_cgroup"),
        ("DROVER_FILES__STORE", "ftp://files", "files.store"),
        ("DROVER_FILES__STORE", "s3://", "files.store"),
        ("DROVER_FILES__MAX_BYTES", "0", "files.max_bytes"),
        ("DROVER_JOBS__WORKERS", "65", "jobs.workers"),
        ("DROVER_JOBS__BROKER_URL", "amqps://mq", "jobs.broker_url"),
        ("DROVER_JOBS__BROKER_PREFIX", "a b", "jobs.broker_prefix"),
        ("DROVER_JOBS__PREFETCH", "0", "jobs.prefetch"),
        ("DROVER_JOBS__WORKERS", "-1", "jobs.workers"),
        ("DROVER_JOBS__MAX_ATTEMPTS", "0", "jobs.max_attempts"),
        ("DROVER_JOBS__RETRY_MAX", "10ms", "jobs.retry_max"),
        ("DROVER_JOBS__LEASE", "0s", "jobs.lease"),
        ("DROVER_ORDERS__UNPAID_TTL", "0s", "orders.unpaid_ttl"),
    ] {
        assert_usage_error(&drover(&["serve"], &[(key, value)]), named);
    }
    // Schedules: an unknown task, or an expression that is not cron; the
    // job commands refuse them like serve.
    std::fs::write(&file, "[jobs.schedule]\n\"backups\" = \"* * * * *\"\n").unwrap();
    assert_usage_error(&drover(&["serve", "--config", file.to_str().unwrap()], &[]), "jobs.schedule");
    std::fs::write(&file, "[jobs.schedule]\n\"orders.expire\" = \"every minute\"\n").unwrap();
    assert_usage_error(&drover(&["jobs", "work", "--config", file.to_str().unwrap()], &[]), "jobs.schedule");
    // An unknown flag is a usage error too.
    assert_eq!(drover(&["serve", "--wrkers", "2"], &[]).status.code(), Some(64));
}

#[test]
fn the_systemd_example_configuration_checks_and_turns_the_bench_routes_off() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/drover.toml");
    let output = drover(&["config", "check", "--config", example], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let effective: toml::Table = String::from_utf8(output.stdout).unwrap().parse().unwrap();
    assert_eq!(effective["bench"]["enabled"].as_bool(), Some(false));
    assert_eq!(effective["log"]["format"].as_str(), Some("json"));
}

#[test]
fn config_check_prints_the_effective_configuration() {
    let dir = TempDir::new("config");
    let file = dir.path().join("ok.toml");
    std::fs::write(&file, "[worker]\ndrain_timeout = \"7s\"\n").unwrap();
    let output = drover(
        &["config", "check", "--config", file.to_str().unwrap(), "--workers", "3"],
        &[("DROVER_HTTP__MAX_HEADERS", "50")],
    );
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let effective: toml::Table = text.parse().unwrap();
    assert_eq!(effective["worker"]["drain_timeout"].as_str(), Some("7s"));
    assert_eq!(effective["server"]["workers"].as_integer(), Some(3));
    assert_eq!(effective["http"]["max_headers"].as_integer(), Some(50));
}

#[test]
fn migrate_applies_then_reports_status() {
    let dir = TempDir::new("migrate-cli");
    let data = dir.path().to_str().unwrap();
    let status = drover(&["migrate", "--status", "--data-dir", data], &[]);
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(String::from_utf8_lossy(&status.stdout).contains("pending"));
    let applied = drover(&["migrate", "--data-dir", data], &[]);
    assert_eq!(applied.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&applied.stdout).contains("applied 1 (users)"));
    let again = drover(&["migrate", "--data-dir", data], &[]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));
    let status = drover(&["migrate", "--status", "--data-dir", data], &[]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains("users") && text.contains("applied 20"), "{text}");
    // An unreachable PostgreSQL is reported with EX_UNAVAILABLE (69).
    let down = drover(&["migrate", "--database-url", "postgres://root@127.0.0.1:1/none"], &[]);
    assert_eq!(down.status.code(), Some(69), "{}", String::from_utf8_lossy(&down.stderr));
}

#[test]
fn secrets_are_redacted_and_bad_keys_name_their_setting() {
    let output = drover(
        &["config", "check", "--database-url", "postgres://app:hunter2@db.internal/app"],
        &[
            ("DROVER_AUTH__KEY", "a-very-secret-value-that-is-long-enough!!"),
            ("DROVER_AUTH__ALGORITHM", "HS256"),
            ("DROVER_JOBS__BROKER_URL", "amqp://jobs:rabbit-secret@mq.internal:5672/drover"),
        ],
    );
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(!text.contains("hunter2") && !text.contains("a-very-secret"), "{text}");
    assert!(text.contains("postgres://app:<redacted>@db.internal/app"), "{text}");
    assert!(!text.contains("rabbit-secret") && text.contains("amqp://jobs:<redacted>@mq.internal"), "{text}");

    // A key file that does not exist, or too short a secret, stops `serve`
    // with exit 64 naming the setting.
    let dir = TempDir::new("keys-cli");
    let data = dir.path().to_str().unwrap();
    assert_usage_error(
        &drover(&["serve", "--data-dir", data], &[("DROVER_AUTH__KEY_FILES", "[\"/nonexistent/k1.pem\"]")]),
        "auth.key_files",
    );
    assert_usage_error(
        &drover(
            &["serve", "--data-dir", data],
            &[("DROVER_AUTH__ALGORITHM", "HS256"), ("DROVER_AUTH__KEY", "short")],
        ),
        "auth.key",
    );
    assert_usage_error(
        &drover(&["serve", "--data-dir", data], &[("DROVER_AUTH__ALGORITHM", "RS256")]),
        "auth.algorithm",
    );
    assert_usage_error(&drover(&["serve", "--database-url", "oracle://x"], &[]), "database.url");
}

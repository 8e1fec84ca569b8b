//! Loading the configuration in layers, later wins: built-in defaults
//! (`config/default.toml`) < `--config FILE` < environment
//! (`DROVER_<SECTION>__<KEY>`, and `RUST_LOG` for `log.level`) < flags.
//!
//! Layers are merged as TOML tables first and deserialised once at the end,
//! so every error (unknown key, wrong type, invalid value) names the full key
//! and the layer that set it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use toml::{Table, Value};

use super::Config;

/// The documented defaults, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Keys whose values never appear in `config check` output or logs.
const SECRET_KEYS: &[&str] = &["auth.key"];

/// One key set by a command-line flag.
#[derive(Debug, Clone)]
pub struct Override {
    /// `section.key`.
    pub key: &'static str,
    /// The flag, for error messages.
    pub flag: &'static str,
    pub value: Value,
}

impl Override {
    /// A flag's text, typed the way an environment value is (see [`typed`]).
    pub fn text(key: &'static str, flag: &'static str, text: &str) -> Self {
        Self { key, flag, value: typed(text) }
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources<'a> {
    pub file: Option<&'a Path>,
    /// The process environment; only `DROVER_*` and `RUST_LOG` are read.
    pub env: Vec<(String, String)>,
    pub overrides: Vec<Override>,
}

/// A configuration that cannot be used. Exit code 64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending key, `section.key`, when there is one.
    pub key: Option<String>,
    /// Which layer set it: "file x.toml", "environment DROVER_X__Y", "flag --x".
    pub origin: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{key}: {} (set by {})", self.message, self.origin),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Loads and validates. Returns the typed configuration and the effective
/// table (secrets redacted) for display.
pub fn load(sources: &Sources<'_>) -> Result<(Config, Table), ConfigError> {
    let mut origins = BTreeMap::new();
    let mut table: Table = DEFAULT_TOML.parse().map_err(|e| ConfigError {
        key: None,
        origin: "built-in defaults".into(),
        message: format!("{e}"),
    })?;
    record_origins(&table, "", "built-in default", &mut origins);

    if let Some(path) = sources.file {
        let origin = format!("file {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            key: None,
            origin: origin.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        let file: Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            key: None,
            origin: origin.clone(),
            message: format!("not valid TOML: {}", e.to_string().trim_end()),
        })?;
        record_origins(&file, "", &origin, &mut origins);
        merge(&mut table, file);
    }

    let mut env: Vec<&(String, String)> =
        sources.env.iter().filter(|(name, _)| name.starts_with(ENV_PREFIX)).collect();
    env.sort();
    for (name, raw) in env {
        let origin = format!("environment {name}");
        let key = env_key(name).ok_or_else(|| ConfigError {
            key: None,
            origin: origin.clone(),
            message: "not a configuration variable: expected DROVER_<SECTION>__<KEY>, such as DROVER_WORKER__DRAIN_TIMEOUT".into(),
        })?;
        set(&mut table, &key, typed(raw), origin, &mut origins);
    }
    if let Some((_, filter)) = sources.env.iter().find(|(name, _)| name == "RUST_LOG") {
        set(
            &mut table,
            "log.level",
            Value::String(filter.clone()),
            "environment RUST_LOG".into(),
            &mut origins,
        );
    }
    for o in &sources.overrides {
        set(&mut table, o.key, o.value.clone(), format!("flag {}", o.flag), &mut origins);
    }

    let origin_of = |key: &str| {
        origins.get(key).cloned().unwrap_or_else(|| {
            // An unknown key's own origin was recorded; a missing one means
            // a whole section came from one layer.
            let section = key.split('.').next().unwrap_or(key);
            origins.get(section).cloned().unwrap_or_else(|| "configuration".into())
        })
    };
    let config: Config = serde_path_to_error::deserialize(Value::Table(table.clone())).map_err(|e| {
        let (key, message) = describe(&e);
        ConfigError { origin: origin_of(&key), key: Some(key), message }
    })?;
    config.validate().map_err(|(key, message)| ConfigError {
        key: Some(key.into()),
        origin: origin_of(key),
        message,
    })?;
    Ok((config, redacted(table)))
}

const ENV_PREFIX: &str = "DROVER_";

/// `DROVER_WORKER__DRAIN_TIMEOUT` → `worker.drain_timeout`, and
/// `DROVER_HTTP__CORS__MAX_AGE` → `http.cors.max_age` for a nested table.
fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    let parts: Vec<&str> = rest.split("__").collect();
    if parts.len() < 2 || parts.iter().any(|part| part.is_empty()) {
        return None;
    }
    Some(parts.join(".").to_ascii_lowercase())
}

/// Text from the environment or a flag, as the TOML value it spells
/// (`4` → integer, `true` → boolean, `["a","b"]` → array), or else as a
/// string (`10s`, `127.0.0.1:8080`).
pub fn typed(text: &str) -> Value {
    match format!("v = {text}").parse::<Table>() {
        Ok(mut table) => table.remove("v").unwrap_or_else(|| Value::String(text.into())),
        Err(_) => Value::String(text.into()),
    }
}

fn set(table: &mut Table, key: &str, value: Value, origin: String, origins: &mut BTreeMap<String, String>) {
    let (path, field) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = table;
    for section in path.split('.').filter(|section| !section.is_empty()) {
        let entry = current.entry(section.to_owned()).or_insert_with(|| Value::Table(Table::new()));
        // A table replaced by a scalar in some layer: deserialisation
        // reports it with the right key.
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        current = entry.as_table_mut().expect("made a table just above");
    }
    current.insert(field.to_owned(), value);
    origins.insert(key.to_owned(), origin);
}

fn merge(base: &mut Table, overlay: Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(base)), Value::Table(overlay)) => merge(base, overlay),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn record_origins(table: &Table, prefix: &str, origin: &str, origins: &mut BTreeMap<String, String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        origins.insert(path.clone(), origin.to_owned());
        if let Value::Table(inner) = value {
            record_origins(inner, &path, origin, origins);
        }
    }
}

/// The key and a message from a deserialisation error. serde_path_to_error
/// puts an unknown field's own name at the end of the path.
fn describe(error: &serde_path_to_error::Error<toml::de::Error>) -> (String, String) {
    let path = error.path().to_string();
    let inner = error.inner().to_string().trim_end().to_owned();
    if inner.starts_with("unknown field `") {
        // serde lists every expected field; the key and "unknown" say enough.
        let expected = inner.split_once(", expected ").map(|(_, rest)| rest.to_owned());
        let message = match expected {
            Some(expected) => format!("unknown key; expected {expected}"),
            None => "unknown key".to_owned(),
        };
        return (path, message);
    }
    (path, inner)
}

fn redacted(mut table: Table) -> Table {
    // URLs may carry a password; the rest of them is worth seeing.
    for (section, key) in [("database", "url"), ("cache", "redis_url"), ("jobs", "broker_url")] {
        if let Some(Value::Table(t)) = table.get_mut(section) {
            if let Some(Value::String(url)) = t.get_mut(key) {
                *url = crate::repo::redact_url(url);
            }
        }
    }
    for key in SECRET_KEYS {
        let (section, field) = key.split_once('.').unwrap_or(("", key));
        if let Some(Value::Table(t)) = table.get_mut(section) {
            if let Some(value) = t.get_mut(field).filter(|v| v.as_str() != Some("")) {
                *value = Value::String("<redacted>".into());
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn error_for(sources: Sources<'_>) -> ConfigError {
        load(&sources).expect_err("configuration should be refused")
    }

    #[test]
    fn defaults_load_and_are_valid() {
        let (config, _) = load(&Sources::default()).unwrap();
        assert_eq!(config.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(config.worker.drain_timeout, Duration::from_secs(30));
    }

    #[test]
    fn later_layers_win() {
        let dir = std::env::temp_dir().join(format!("drover-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(
            &file,
            "[worker]\ndrain_timeout = \"5s\"\nboot_timeout = \"7s\"\n[server]\nworkers = 3\n",
        )
        .unwrap();
        let sources = Sources {
            file: Some(&file),
            env: env(&[
                ("DROVER_WORKER__DRAIN_TIMEOUT", "6s"),
                ("DROVER_SERVER__WORKERS", "4"),
                ("PATH", "/bin"),
            ]),
            overrides: vec![Override::text("server.workers", "--workers", "5")],
        };
        let (config, _) = load(&sources).unwrap();
        assert_eq!(config.worker.boot_timeout, Duration::from_secs(7));
        assert_eq!(config.worker.drain_timeout, Duration::from_secs(6));
        assert_eq!(config.server.workers, 5);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn errors_name_the_key_and_its_origin() {
        let check = |sources: Sources<'_>, key: &str, origin: &str| {
            let error = error_for(sources);
            assert_eq!(error.key.as_deref(), Some(key), "{error}");
            assert_eq!(error.origin, origin, "{error}");
        };
        check(
            Sources { env: env(&[("DROVER_WORKER__DRAIN_TIMEOUT", "soon")]), ..Sources::default() },
            "worker.drain_timeout",
            "environment DROVER_WORKER__DRAIN_TIMEOUT",
        );
        check(
            Sources { env: env(&[("DROVER_SERVER__WRKERS", "2")]), ..Sources::default() },
            "server.wrkers",
            "environment DROVER_SERVER__WRKERS",
        );
        check(
            Sources {
                overrides: vec![Override::text("server.workers", "--workers", "many")],
                ..Sources::default()
            },
            "server.workers",
            "flag --workers",
        );
        check(
            Sources {
                overrides: vec![Override::text("server.listen", "--listen", "localhost")],
                ..Sources::default()
            },
            "server.listen",
            "flag --listen",
        );
        check(
            Sources {
                overrides: vec![Override::text("log.format", "--log-format", "xml")],
                ..Sources::default()
            },
            "log.format",
            "flag --log-format",
        );
        check(
            Sources { env: env(&[("DROVER_WORKER__BOOT_TIMEOUT", "0s")]), ..Sources::default() },
            "worker.boot_timeout",
            "environment DROVER_WORKER__BOOT_TIMEOUT",
        );
        check(
            Sources { env: env(&[("RUST_LOG", "info,drover=loud")]), ..Sources::default() },
            "log.level",
            "environment RUST_LOG",
        );
        let error = error_for(Sources { env: env(&[("DROVER_WORKERS", "2")]), ..Sources::default() });
        assert!(error.to_string().contains("DROVER_WORKERS"), "{error}");
    }

    #[test]
    fn values_are_typed_like_toml() {
        assert_eq!(typed("4"), Value::Integer(4));
        assert_eq!(typed("10s"), Value::String("10s".into()));
        assert_eq!(typed("127.0.0.1:80"), Value::String("127.0.0.1:80".into()));
        assert_eq!(typed("[\"a\"]"), Value::Array(vec![Value::String("a".into())]));
    }
}

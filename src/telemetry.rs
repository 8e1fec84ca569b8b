//! Logging: JSON lines on stderr (journald stores them as they are), a
//! readable form when stderr is a terminal and no format is configured, and
//! on every line who wrote it: the supervisor or which worker slot, and the
//! pid.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Which process is logging.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Supervisor,
    Worker {
        slot: usize,
        generation: u64,
    },
    /// A job process (`drover jobs work`, or one the supervisor runs).
    Jobs {
        slot: usize,
        generation: u64,
    },
    /// One-shot commands (`config check`).
    Command,
}

/// Installs the global subscriber. The filter was validated with the
/// configuration, so an unparsable one here falls back to `info`. An `auto`
/// format is resolved here, against this process's own stderr: workers
/// inherit the supervisor's, so every process of a server picks the same.
pub fn init(config: &LogConfig, role: Role) {
    let filter: Targets =
        config.level.parse().unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let json = config.format.resolve(std::io::stderr().is_terminal()) == LogFormat::Json;
    let format = LineFormat { json, role, pid: std::process::id() };
    let layer =
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false).event_format(format);
    // A second init (tests calling in twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(filter).with(layer).try_init();
}

struct LineFormat {
    json: bool,
    role: Role,
    pid: u32,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = FieldMap(Map::new());
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or(Value::String(String::new()));
        let ts = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        if self.json {
            let mut line = Map::new();
            line.insert("ts".into(), ts.into());
            line.insert("level".into(), meta.level().as_str().into());
            match self.role {
                Role::Supervisor => {
                    line.insert("role".into(), "supervisor".into());
                }
                Role::Worker { slot, generation } => {
                    line.insert("role".into(), "worker".into());
                    line.insert("slot".into(), slot.into());
                    line.insert("generation".into(), generation.into());
                }
                Role::Jobs { slot, generation } => {
                    line.insert("role".into(), "jobs".into());
                    line.insert("slot".into(), slot.into());
                    line.insert("generation".into(), generation.into());
                }
                Role::Command => {
                    line.insert("role".into(), "command".into());
                }
            }
            line.insert("pid".into(), self.pid.into());
            line.insert("target".into(), meta.target().into());
            line.insert("msg".into(), message);
            line.extend(fields.0);
            writeln!(writer, "{}", Value::Object(line))
        } else {
            let who = match self.role {
                Role::Supervisor => "supervisor".to_owned(),
                Role::Worker { slot, .. } => format!("worker[{slot}]"),
                Role::Jobs { slot, .. } => format!("jobs[{slot}]"),
                Role::Command => "drover".to_owned(),
            };
            let text = match message {
                Value::String(s) => s,
                other => other.to_string(),
            };
            let mut line = format!("{ts} {:>5} {who} pid={} {text}", meta.level(), self.pid);
            for (key, value) in fields.0 {
                let _ = match value {
                    Value::String(s) => write!(line, " {key}={s}"),
                    other => write!(line, " {key}={other}"),
                };
            }
            writeln!(writer, "{line}")
        }
    }
}

/// Collects an event's fields as JSON values.
struct FieldMap(Map<String, Value>);

impl Visit for FieldMap {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
}

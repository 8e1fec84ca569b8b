//! The supervisor process: what `drover serve` becomes once it has checked
//! the configuration. `serve` execs the small `drover-supervisor` executable
//! (same PID, so systemd's MAINPID and socket activation still hold) with a
//! [`Spec`] in its environment; this module is that executable's `main`.
//!
//! Why a second executable: a process's resident memory includes every page
//! of its executable the kernel maps in around the code it runs, and
//! `drover` carries the whole application (database drivers, crypto,
//! clap). The supervisor runs for the life of the service and needs none
//! of it, so it runs from a binary that links only the process model, the
//! logging and the admin listener. If `drover-supervisor` is missing, `serve`
//! runs [`run`] in its own process instead and says so.

use std::net::SocketAddr;
use std::process::ExitCode;

use drover_protocol::handover::FdName;
use drover_supervisor::activation::Handover;
use drover_supervisor::{Options, Outcome, Supervisor};
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use crate::config::LogConfig;
use crate::telemetry::{self, Role};

/// The environment variable `serve` passes the [`Spec`] in, as JSON. The
/// supervisor removes it first thing, so workers never see it.
pub const SPEC_ENV: &str = "DROVER_SUPERVISOR_SPEC";

/// The executable `serve` execs, looked up next to `drover` itself.
pub const EXECUTABLE: &str = "drover-supervisor";

/// Everything the supervisor needs, resolved by `drover serve` from the
/// configuration and command line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Spec {
    pub log: LogConfig,
    pub listen: Vec<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    /// `server.admin_token`: where the token is read from, not the token,
    /// so the secret never sits in the supervisor's environment.
    #[serde(default)]
    pub admin_token: String,
    /// `--upgrade-fds`: the sockets handed over by the previous supervisor.
    pub upgrade_fds: Option<String>,
    pub options: Options,
}

/// The id of this build, the same in `drover` and `drover-supervisor` when
/// they were built together (see `build.rs`).
pub const BUILD_ID: &str = env!("BUILD_ID_DROVER");

/// The flag that makes `drover-supervisor` print [`BUILD_ID`] and exit.
pub const BUILD_ID_FLAG: &str = "--build-id";

/// `drover-supervisor`'s entry point.
pub fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|arg| arg == BUILD_ID_FLAG) {
        println!("{BUILD_ID}");
        return ExitCode::SUCCESS;
    }
    let Some(json) = std::env::var_os(SPEC_ENV) else {
        eprintln!(
            "drover-supervisor: started by `drover serve`, not by hand (no {SPEC_ENV} in the environment)"
        );
        return ExitCode::from(super::EXIT_USAGE);
    };
    // Single-threaded here: nothing else reads the environment yet.
    std::env::remove_var(SPEC_ENV);
    match serde_json::from_slice::<Spec>(json.as_encoded_bytes()) {
        Ok(spec) => run(spec),
        Err(error) => {
            eprintln!("drover-supervisor: {SPEC_ENV} is not a valid specification: {error}");
            ExitCode::from(super::EXIT_USAGE)
        }
    }
}

/// Runs the supervisor until it has drained (or handed over to a successor).
pub fn run(spec: Spec) -> ExitCode {
    telemetry::init(&spec.log, Role::Supervisor);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            error!(%error, "cannot start the supervisor's event loop");
            return ExitCode::FAILURE;
        }
    };
    // Bind inside the runtime: tokio registers the sockets lazily, but the
    // signal handlers must exist before the first worker is forked.
    let outcome = runtime.block_on(async {
        let Spec { listen, admin_listen, admin_token, upgrade_fds, mut options, .. } = spec;
        let admin_token = crate::admin::read_token(&admin_token)
            .map_err(|e| std::io::Error::other(format!("server.admin_token: {e}")))?;
        let mut handover = upgrade_fds.as_deref().map(Handover::from_spec).transpose()?;
        let admin = match (handover.as_mut().and_then(|h| h.admin.take()), admin_listen) {
            (Some(listener), _) => {
                listener.set_nonblocking(true)?;
                Some(tokio::net::TcpListener::from_std(listener)?)
            }
            (None, Some(addr)) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| std::io::Error::new(e.kind(), format!("admin listener {addr}: {e}")))?,
            ),
            (None, None) => None,
        };
        if let Some(listener) = &admin {
            options.ready_extra.push(("admin".into(), listener.local_addr()?.to_string()));
            options.handover_extra.push((FdName::Admin, std::os::fd::AsRawFd::as_raw_fd(listener)));
        }
        let supervisor = match handover {
            Some(handover) => Supervisor::adopt(options, handover)?,
            None => Supervisor::bind(options, &listen)?,
        };
        if let Some(listener) = admin {
            info!(admin = %listener.local_addr()?, "serving /metrics");
            tokio::spawn(crate::admin::serve(listener, supervisor.metrics_client(), admin_token));
        }
        supervisor.run().await
    });
    match outcome {
        Ok(Outcome::Drained | Outcome::Upgraded) => ExitCode::SUCCESS,
        Ok(Outcome::StoppedAtOnce) => ExitCode::FAILURE,
        Ok(Outcome::WorkerFatal(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            error!(%error, "supervisor failed");
            eprintln!("drover: {error}");
            ExitCode::FAILURE
        }
    }
}

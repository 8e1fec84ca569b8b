//! What drover's processes say to each other, in one place that both sides
//! depend on: the supervisor and the worker each link this crate, never one
//! another.
//!
//! - [`channel`]: the control channel between the supervisor and each
//!   worker (JSON lines over an inherited socketpair);
//! - [`limits`]: the host-wide rate limits a worker asks the supervisor to
//!   apply, and their evaluator;
//! - [`ctl`]: `drover ctl`'s requests on the control socket and the typed
//!   replies;
//! - [`handover`]: the fds an upgrading supervisor passes its successor,
//!   and how it names them;
//! - [`worker_args`]: the command line a worker is started with.
#![forbid(unsafe_code)]

pub mod channel;
pub mod ctl;
pub mod handover;
pub mod limits;
pub mod worker_args;

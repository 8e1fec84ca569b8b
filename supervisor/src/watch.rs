//! One task per worker process: waits for it to exit, relays its control
//! messages to the supervisor and writes the supervisor's commands to it.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::sync::mpsc;

use drover_protocol::channel::{self as protocol, SupervisorMessage, WorkerMessage};

use crate::spawn;

/// How long to wait for the rest of a dead worker's messages. Its end of the
/// channel is closed, so only a grandchild holding the fd could delay this.
const LAST_WORDS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(200);

/// Identifies a worker process for the supervisor's whole life (pids can be
/// reused; these are not).
pub type WorkerId = u64;

/// What the watch task reports.
#[derive(Debug)]
pub enum Event {
    Message(WorkerId, WorkerMessage),
    Exited(WorkerId, std::io::Result<ExitStatus>),
    /// About the new supervisor of an upgrade.
    Successor(SuccessorEvent),
}

/// What the supervisor asks the watch task to do.
#[derive(Debug)]
pub enum Command {
    Send(SupervisorMessage),
    Kill,
}

pub async fn watch(
    id: WorkerId,
    mut child: Child,
    control: UnixStream,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    let (read, mut write) = control.into_split();
    let mut lines = BufReader::new(read).split(b'\n');
    let mut reading = true;
    let mut commanded = true;
    loop {
        tokio::select! {
            status = child.wait() => {
                // The worker's last words (its exit reason) may still be
                // unread; the channel is at EOF now, so this is quick.
                if reading {
                    let rest = async {
                        while let Ok(Some(line)) = lines.next_segment().await {
                            if let Ok(message) = protocol::decode::<WorkerMessage>(&line) {
                                let _ = events.send(Event::Message(id, message));
                            }
                        }
                    };
                    let _ = tokio::time::timeout(LAST_WORDS_TIMEOUT, rest).await;
                }
                let _ = events.send(Event::Exited(id, status));
                return;
            }
            line = lines.next_segment(), if reading => match line {
                Ok(Some(line)) => match protocol::decode::<WorkerMessage>(&line) {
                    Ok(message) => {
                        let _ = events.send(Event::Message(id, message));
                    }
                    Err(error) => tracing::warn!(worker = id, %error, "unreadable control message"),
                },
                // The worker closed its end; it is exiting. Keep waiting for
                // the process itself.
                Ok(None) | Err(_) => reading = false,
            },
            command = commands.recv(), if commanded => match command {
                Some(Command::Send(message)) => {
                    // A worker that has stopped reading is about to exit; its
                    // exit is reported by `child.wait()`.
                    let _ = write.write_all(&protocol::encode(&message)).await;
                }
                Some(Command::Kill) => {
                    let _ = child.start_kill();
                }
                None => commanded = false,
            },
        }
    }
}

/// What the successor of an upgrade reports.
#[derive(Debug)]
pub enum SuccessorEvent {
    Ready,
    Exited(String),
}

/// Waits for the successor's "ready" or its exit, whichever comes first,
/// then for its exit only if it was not ready.
pub async fn watch_successor(mut successor: spawn::Successor, events: mpsc::UnboundedSender<Event>) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(successor.handshake).lines();
    tokio::select! {
        line = lines.next_line() => {
            if matches!(line, Ok(Some(ref l)) if l == "ready") {
                let _ = events.send(Event::Successor(SuccessorEvent::Ready));
                // It carries on as the main process; we never wait for it.
                return;
            }
            let status = successor.child.wait().await;
            let text = status.map_or_else(|e| e.to_string(), |s| describe(&s));
            let _ = events.send(Event::Successor(SuccessorEvent::Exited(text)));
        }
        status = successor.child.wait() => {
            let text = status.map_or_else(|e| e.to_string(), |s| describe(&s));
            let _ = events.send(Event::Successor(SuccessorEvent::Exited(text)));
        }
    }
}

/// "exit code 3" or "killed by signal 9 (SIGKILL)".
pub fn describe(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(signal) => format!("killed by signal {signal}{}", signal_name(signal)),
        None => status.to_string(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGINT => " (SIGINT)",
        _ => "",
    }
}

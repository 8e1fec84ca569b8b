//! The command line a worker is started with: the supervisor writes it
//! ([`WorkerArgs::to_args`]), the worker's `drover worker` parses the same
//! flags. The flag names live here so the two cannot drift.

/// The first fd number a worker finds its inherited sockets at; 0-2 are stdio.
pub const FIRST_INHERITED_FD: i32 = 3;

pub const SLOT: &str = "--slot";
pub const GENERATION: &str = "--generation";
/// Comma-separated fd numbers of the slot's listening sockets.
pub const LISTEN_FDS: &str = "--listen-fds";
/// The worker's end of the control channel.
pub const CONTROL_FD: &str = "--control-fd";

/// What the supervisor tells a worker on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerArgs {
    /// The slot this worker serves.
    pub slot: usize,
    /// The supervisor's generation (rolling restarts) it belongs to.
    pub generation: u64,
    /// Its inherited listening sockets.
    pub listen_fds: Vec<i32>,
    /// Its inherited control channel; none when run without a supervisor.
    pub control_fd: Option<i32>,
}

impl WorkerArgs {
    /// The arguments for a worker with `listeners` sockets, remapped from
    /// [`FIRST_INHERITED_FD`] on, and the control channel right after them.
    pub fn inherited(slot: usize, generation: u64, listeners: usize) -> Self {
        let listen_fds = (0..listeners).map(|i| FIRST_INHERITED_FD + i as i32).collect();
        let control_fd = Some(FIRST_INHERITED_FD + listeners as i32);
        Self { slot, generation, listen_fds, control_fd }
    }

    /// The flags, in the order the supervisor passes them.
    pub fn to_args(&self) -> Vec<String> {
        let listen_fds: Vec<String> = self.listen_fds.iter().map(i32::to_string).collect();
        let mut args =
            vec![SLOT.to_owned(), self.slot.to_string(), GENERATION.to_owned(), self.generation.to_string()];
        // A job process has no socket, and no --listen-fds flag.
        if !listen_fds.is_empty() {
            args.extend([LISTEN_FDS.to_owned(), listen_fds.join(",")]);
        }
        if let Some(fd) = self.control_fd {
            args.extend([CONTROL_FD.to_owned(), fd.to_string()]);
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_fds_follow_stdio_and_the_control_channel_comes_last() {
        let args = WorkerArgs::inherited(1, 7, 2);
        assert_eq!(args.listen_fds, [3, 4]);
        assert_eq!(args.control_fd, Some(5));
        assert_eq!(
            args.to_args(),
            ["--slot", "1", "--generation", "7", "--listen-fds", "3,4", "--control-fd", "5"]
        );
    }

    #[test]
    fn a_worker_without_sockets_gets_the_control_channel_first() {
        let args = WorkerArgs::inherited(0, 2, 0);
        assert_eq!(args.control_fd, Some(3));
        assert_eq!(args.to_args(), ["--slot", "0", "--generation", "2", "--control-fd", "3"]);
    }
}

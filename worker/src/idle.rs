//! A second event loop on a thread of its own in the idle scheduling
//! class, for long bulk work that does I/O: a report read from the database
//! and written out as CSV. The worker's event loop then only hands the
//! finished pieces to the client, so requests on the same worker are not
//! kept waiting behind the rows (issue 12: `/healthz` beside 16 report
//! downloads).
//!
//! Like the blocking pool's threads ([`crate::blocking`]), it runs only
//! when the worker's event loop has nothing to do, and gives the CPU back
//! the moment it wakes. One long-lived loop rather than a thread per job,
//! so that what the jobs keep between them (a pool of database connections
//! whose I/O this loop drives) outlives each job.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;

/// A job: made on the idle loop's thread, so its future need not be `Send`.
type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The idle loop stopped (its thread panicked outside any job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the idle loop has stopped")]
pub struct Stopped;

/// Handle to an idle loop. Cheap to clone; the loop and its thread end
/// when the last handle is dropped, abandoning the jobs still running.
#[derive(Clone, Debug)]
pub struct IdleLoop {
    jobs: mpsc::UnboundedSender<Job>,
}

impl IdleLoop {
    /// Starts the loop: a current-thread tokio runtime with I/O and timers
    /// on a new thread named `name`, in the idle scheduling class. An error
    /// means the thread could not be started (a resource limit).
    pub fn start(name: &str) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            crate::blocking::lower_thread_priority();
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                while let Some(job) = queue.recv().await {
                    // A job that panics ends alone; tokio catches it.
                    tokio::task::spawn_local(job());
                }
            });
        })?;
        Ok(Self { jobs })
    }

    /// Runs the future `make` returns as a task on the idle loop. `make`
    /// runs there, so the future need not be `Send`; what it captures must
    /// be.
    pub fn spawn<F, Fut>(&self, make: F) -> Result<(), Stopped>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.jobs.send(Box::new(move || Box::pin(make()))).map_err(|_| Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jobs_run_on_one_thread_of_its_own_in_the_idle_class_and_share_it() {
        let idle = IdleLoop::start("idle-test").unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let sender = sender.clone();
            idle.spawn(move || async move {
                // The loop has timers and I/O.
                tokio::time::sleep(Duration::from_millis(1)).await;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.is_ok();
                let thread = std::thread::current();
                let name = thread.name().map(str::to_owned);
                sender.send((name, thread.id(), crate::blocking::tests::thread_policy(), listener)).unwrap();
            })
            .unwrap();
        }
        let first = receiver.recv_timeout(Duration::from_secs(10)).unwrap();
        let second = receiver.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(first.0.as_deref(), Some("idle-test"));
        assert_eq!(first.1, second.1, "one thread for every job");
        assert_ne!(first.1, std::thread::current().id());
        assert_eq!(first.2, i64::from(libc::SCHED_IDLE));
        assert!(first.3 && second.3);
    }

    #[test]
    fn a_job_that_panics_leaves_the_loop_running() {
        let idle = IdleLoop::start("idle-panic").unwrap();
        idle.spawn(|| async { panic!("a job that fails") }).unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        idle.spawn(move || async move { sender.send(()).unwrap() }).unwrap();
        receiver.recv_timeout(Duration::from_secs(10)).unwrap();
    }
}

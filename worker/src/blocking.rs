//! A bounded pool for CPU-heavy work (password hashing, big compression,
//! reports), so it never runs on the event loop.
//!
//! tokio's blocking pool is bounded in threads but not in queued jobs; the
//! semaphore here bounds the jobs too, so a burst of expensive requests is
//! refused quickly with [`Busy`] instead of queueing without limit.

use std::rc::Rc;

use tokio::sync::Semaphore;

/// Nice value of blocking-pool threads. On Linux a thread's nice value is
/// its own; at 15 a busy hashing thread gets about a thirtieth of the CPU share
/// of the event loop when both want the same core, so a storm of expensive
/// requests slows itself, not every other request of the worker.
pub const BLOCKING_THREAD_NICE: i32 = 15;

/// Lowers the calling thread's scheduling priority to
/// [`BLOCKING_THREAD_NICE`]. Called as each blocking-pool thread starts.
#[allow(unsafe_code)]
pub(crate) fn lower_thread_priority() {
    // SAFETY: setpriority(2) has no memory-safety preconditions. With
    // PRIO_PROCESS and who = 0 Linux applies it to the calling thread only.
    // Failure (for example a seccomp filter) just leaves the priority as is.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, BLOCKING_THREAD_NICE);
    }
}

/// The pool was full: threads busy and queue at its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the blocking pool is busy")]
pub struct Busy;

/// Handle to the worker's blocking pool. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BlockingPool {
    permits: Rc<Semaphore>,
}

impl BlockingPool {
    /// `capacity` is threads plus queued jobs.
    pub fn new(capacity: usize) -> Self {
        Self { permits: Rc::new(Semaphore::new(capacity)) }
    }

    /// Runs `job` on a blocking thread and waits for its result without
    /// blocking the event loop.
    pub async fn run<T, F>(&self, job: F) -> Result<T, Busy>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self.permits.try_acquire().map_err(|_| Busy)?;
        match tokio::task::spawn_blocking(job).await {
            Ok(value) => Ok(value),
            // The job panicked: re-raise it here, where the caller's task
            // will be torn down, rather than invent a value.
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of the calling thread, from /proc.
    fn thread_nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields resume after the command name; nice is field 19 of stat(5).
        let (_, rest) = stat.rsplit_once(") ").unwrap();
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn blocking_threads_run_below_the_event_loop() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_start(lower_thread_priority)
            .build()
            .unwrap();
        let loop_nice = thread_nice();
        let pool_nice = runtime.block_on(async { tokio::task::spawn_blocking(thread_nice).await.unwrap() });
        assert!(pool_nice >= i64::from(BLOCKING_THREAD_NICE), "pool thread nice {pool_nice}");
        assert_eq!(thread_nice(), loop_nice, "the event loop keeps its priority");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn jobs_run_off_the_loop_and_excess_is_refused() {
        let pool = BlockingPool::new(1);
        let loop_thread = std::thread::current().id();
        let ran_on = pool.run(|| std::thread::current().id()).await.unwrap();
        assert_ne!(ran_on, loop_thread);

        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy_pool = pool.clone();
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let first =
                    tokio::task::spawn_local(
                        async move { busy_pool.run(move || wait.recv().unwrap()).await },
                    );
                tokio::task::yield_now().await;
                assert_eq!(pool.run(|| ()).await, Err(Busy));
                release.send(()).unwrap();
                first.await.unwrap().unwrap();
                assert_eq!(pool.run(|| 5).await, Ok(5));
            })
            .await;
    }
}

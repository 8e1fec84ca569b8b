//! A bounded pool for CPU-heavy work (password hashing, big compression,
//! reports), so it never runs on the event loop.
//!
//! tokio's blocking pool is bounded in threads but not in queued jobs; the
//! semaphore here bounds the jobs too, so a burst of expensive requests is
//! refused quickly with [`Busy`] instead of queueing without limit.

use std::rc::Rc;

use tokio::sync::Semaphore;

/// Puts the calling thread in the `SCHED_IDLE` scheduling class, and in the
/// idle cgroup when one is configured (see `idle_cgroup`). Called as each
/// blocking-pool thread and idle loop starts.
///
/// A hashing thread then runs only when the event loop has nothing to do,
/// and the loop takes the CPU back the moment it wakes: Linux preempts an
/// idle-class task at once for a normal one, where a merely niced task
/// would keep the CPU until its slice ends (milliseconds of added latency
/// for every request on the loop). Under full load the expensive work waits,
/// bounded by the pool's queue (new jobs then get `Busy`), instead of
/// slowing every other request.
#[allow(unsafe_code)]
pub(crate) fn lower_thread_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler(2) reads `param`, which lives for the
    // call. With pid 0 Linux applies it to the calling thread only. Failure
    // (a seccomp filter, say) leaves the thread in the normal class.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
    crate::idle_cgroup::join();
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
pub(crate) mod tests {
    use super::*;

    /// The scheduling policy of the calling thread, from /proc.
    pub(crate) fn thread_policy() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields resume after the command name; policy is field 41 of stat(5).
        let (_, rest) = stat.rsplit_once(") ").unwrap();
        rest.split(' ').nth(38).unwrap().parse().unwrap()
    }

    #[test]
    fn blocking_threads_run_below_the_event_loop() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_start(lower_thread_priority)
            .build()
            .unwrap();
        let loop_policy = thread_policy();
        let pool_policy =
            runtime.block_on(async { tokio::task::spawn_blocking(thread_policy).await.unwrap() });
        assert_eq!(pool_policy, i64::from(libc::SCHED_IDLE), "pool threads run in the idle class");
        assert_eq!(thread_policy(), loop_policy, "the event loop keeps its policy");
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

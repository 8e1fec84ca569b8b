//! A job process's loop: run scheduled tasks that are due, relay the
//! outbox, claim due messages of every queue, hand each to its handler, and settle it (handled, retried later
//! with exponential backoff and jitter, or dead). It stops between two
//! messages when asked, handing back what it had claimed but not begun.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use drover_worker::{QueueCounters, LATENCY_BUCKETS};
use rand_core::{OsRng, RngCore};
use tokio::sync::{watch, Notify};

use super::schedule::{self, Schedules, TaskSettings};
use super::transport::{Delivery, Transport, TransportError};
use super::{relay, Outcome, QUEUES};
use crate::app::Services;
use crate::repo::sql;
use crate::repo::Repos;

/// How a consumer paces itself (`[jobs]`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Deliveries per message before it is dead.
    pub max_attempts: i64,
    /// The pause when there was nothing to do.
    pub poll_interval: Duration,
    /// The delay before the first retry; doubled per attempt...
    pub retry_base: Duration,
    /// ...up to this.
    pub retry_max: Duration,
}

/// Messages taken at once per queue.
const CLAIM: usize = 16;

/// What one process has done, for its log, `drover ctl status` and the
/// metrics: the outbox events it published, the message in hand, and per
/// queue what it received and how each ended, with handling times.
#[derive(Debug, Default)]
pub struct Stats {
    pub published: Cell<u64>,
    pub in_hand: Cell<u64>,
    queues: RefCell<BTreeMap<&'static str, QueueCounters>>,
}

impl Stats {
    fn count(&self, queue: &'static str, update: impl FnOnce(&mut QueueCounters)) {
        let mut queues = self.queues.borrow_mut();
        let counters = queues.entry(queue).or_insert_with(|| QueueCounters {
            queue: queue.to_owned(),
            buckets: vec![0; LATENCY_BUCKETS.len()],
            ..QueueCounters::default()
        });
        update(counters);
    }

    fn settled(&self, queue: &'static str, took: Duration, outcome: fn(&mut QueueCounters)) {
        self.count(queue, |counters| {
            outcome(counters);
            let bucket = LATENCY_BUCKETS.iter().position(|&bound| took.as_secs_f64() <= bound);
            if let Some(bucket) = bucket {
                counters.buckets[bucket] += 1;
            }
            counters.sum_us += took.as_micros() as u64;
        });
    }

    /// Per queue, by name.
    pub fn queues(&self) -> Vec<QueueCounters> {
        self.queues.borrow().values().cloned().collect()
    }

    /// Messages handled, retried and dead, over every queue.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.queues
            .borrow()
            .values()
            .fold((0, 0, 0), |(h, r, d), q| (h + q.succeeded, r + q.retried, d + q.dead))
    }
}

/// What a consumer works with.
pub struct Context<'a> {
    pub services: &'a Services,
    pub transport: &'a dyn Transport,
    pub settings: Settings,
    pub schedules: &'a Schedules,
    pub tasks: TaskSettings,
    pub stats: &'a Stats,
    /// Woken when events are committed (PostgreSQL's LISTEN).
    pub outbox: &'a Notify,
}

/// The longest pause after failures in a row (database or broker down).
const FAILING_PAUSE_MAX: Duration = Duration::from_secs(5);

/// Runs until `stop` turns true. Database and broker errors are logged and
/// waited out, longer after each failure in a row: a job process outlives
/// an outage.
pub async fn run(cx: Context<'_>, mut stop: watch::Receiver<bool>) {
    let Context { services, transport, settings, schedules, tasks, stats, outbox } = cx;
    let mut failures = 0u32;
    while !*stop.borrow() {
        if let Err(error) = schedule::run_due(services, schedules, tasks).await {
            tracing::warn!(%error, "checking the schedules failed; trying again");
        }
        let busy = match round(services, transport, settings, &stop, stats).await {
            Ok(busy) => {
                if failures > 0 {
                    tracing::info!(failures, "the job round works again");
                }
                failures = 0;
                busy
            }
            Err(error) => {
                failures += 1;
                let pause =
                    settings.poll_interval.saturating_mul(1 << failures.min(5)).min(FAILING_PAUSE_MAX);
                tracing::warn!(%error, failures, retry_in_ms = pause.as_millis() as u64, "the job round failed; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        if !busy {
            tokio::select! {
                _ = transport.wait(settings.poll_interval) => {}
                // Events committed (PostgreSQL's LISTEN): relay them now.
                _ = outbox.notified() => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// One round: relay, then take what is due of each queue. Whether anything
/// was done.
async fn round(
    services: &Services,
    transport: &dyn Transport,
    settings: Settings,
    stop: &watch::Receiver<bool>,
    stats: &Stats,
) -> Result<bool, TransportError> {
    let sql = services.db.sql();
    let now = sql::from_millis(sql::millis(std::time::SystemTime::now()));
    let published = relay::run_once(&*sql, transport, now).await?;
    stats.published.set(stats.published.get() + published as u64);
    let mut busy = published > 0;
    for (name, _) in QUEUES {
        if *stop.borrow() {
            break;
        }
        let received = transport.receive(name, CLAIM).await?;
        busy |= !received.is_empty();
        let mut received = received.into_iter();
        for delivery in received.by_ref() {
            stats.count(name, |counters| counters.received += 1);
            stats.in_hand.set(1);
            let started = std::time::Instant::now();
            let settled = settle(transport, services, settings, &delivery).await;
            stats.in_hand.set(0);
            stats.settled(name, started.elapsed(), settled?);
            if *stop.borrow() {
                break;
            }
        }
        for left in received {
            transport.release(&left).await?;
        }
    }
    Ok(busy)
}

async fn settle(
    transport: &dyn Transport,
    services: &Services,
    settings: Settings,
    delivery: &Delivery,
) -> Result<fn(&mut QueueCounters), TransportError> {
    let message = &delivery.message;
    match super::handle(services, delivery.queue, &message.event_id, &message.payload).await {
        Outcome::Done => {
            transport.ack(delivery).await?;
            Ok(|counters| counters.succeeded += 1)
        }
        Outcome::Retry(error) if delivery.attempts < settings.max_attempts => {
            let delay = backoff(settings, delivery.attempts);
            tracing::warn!(queue = %delivery.queue, event_id = %message.event_id, kind = %message.kind,
                attempts = delivery.attempts, retry_in_ms = delay.as_millis() as u64, %error, "a job failed; retrying");
            transport.retry(delivery, delay, &error).await?;
            Ok(|counters| counters.retried += 1)
        }
        Outcome::Retry(error) | Outcome::Poison(error) => {
            tracing::error!(queue = %delivery.queue, event_id = %message.event_id, kind = %message.kind,
                attempts = delivery.attempts, %error, "a job is dead: `drover jobs dead` lists it, `drover jobs retry` revives it");
            transport.bury(delivery, &error).await?;
            Ok(|counters| counters.dead += 1)
        }
    }
}

/// The delay before retry `attempt` (1-based): `retry_base` doubled per
/// attempt, capped at `retry_max`, then a random part of it taken off
/// ("equal jitter": between half and all of it), so that messages that
/// failed together do not all come back together.
pub fn backoff(settings: Settings, attempt: i64) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1)).unwrap_or(u32::MAX).min(30);
    let full = settings.retry_base.saturating_mul(1 << doublings).min(settings.retry_max);
    let half = full / 2;
    let jitter = Duration::from_millis(OsRng.next_u64() % (half.as_millis() as u64 + 1));
    half + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let settings = Settings {
            max_attempts: 5,
            poll_interval: Duration::from_millis(100),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        };
        for _ in 0..100 {
            let first = backoff(settings, 1);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1), "{first:?}");
            let third = backoff(settings, 3);
            assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4), "{third:?}");
            let late = backoff(settings, 40);
            assert!(late >= Duration::from_secs(30) && late <= Duration::from_secs(60), "{late:?}");
        }
    }
}

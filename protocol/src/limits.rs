//! Host-wide rate limits, kept by the supervisor so that a client whose
//! connections the kernel spreads over every worker gets one budget, not
//! one per worker. Workers ask over the control channel
//! (`WorkerMessage::Limit`); a worker cut off from its
//! supervisor keeps the same state for itself (see the worker's
//! `Broadcast::limit`).
//!
//! Keys are opaque strings: the application decides what they name (an
//! address, an account) and with which quota, so this knows nothing of
//! HTTP. Two kinds of limit:
//! - a rate: GCRA through `governor`, one keyed limiter per quota;
//! - a backoff: after `free` failures, each further failure doubles a
//!   delay (from `base` up to `max`) during which the key is refused. For
//!   wrong passwords: a few typos cost nothing, a guessing run slows to a
//!   crawl.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// One question about one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitCheck {
    pub key: String,
    pub kind: LimitKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LimitKind {
    /// Take one request from a budget of `burst` that refills evenly over
    /// `period_ms`.
    Rate { burst: u32, period_ms: u64 },
    /// Is the key waiting out a backoff?
    Backoff,
    /// Record a failure: past `free` of them, the key waits
    /// `base_ms * 2^(failures - free - 1)`, at most `max_ms`.
    Fail { free: u32, base_ms: u64, max_ms: u64 },
    /// A success: forget the key's failures.
    Forgive,
}

/// The answer to one [`LimitCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub allowed: bool,
    /// When refused: how long until it would be allowed. For a `Fail`
    /// that starts or extends a backoff: its length.
    pub retry_after_ms: u64,
    /// Requests left in the budget right now (rates only).
    pub remaining: u32,
}

impl Verdict {
    pub const ALLOWED: Verdict = Verdict { allowed: true, retry_after_ms: 0, remaining: 0 };
}

type Limiter<C> = RateLimiter<String, HashMapStateStore<String>, C, StateInformationMiddleware>;

struct Failures<I> {
    count: u32,
    blocked_until: Option<I>,
    last: I,
}

/// Keys forgotten after this long without a failure or request.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// How often stale keys are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Every limit's state.
pub struct Limits<C: Clock + Clone = DefaultClock> {
    clock: C,
    rates: HashMap<(u32, u64), Limiter<C>>,
    failures: HashMap<String, Failures<C::Instant>>,
    swept: C::Instant,
}

impl Default for Limits<DefaultClock> {
    fn default() -> Self {
        Self::with_clock(DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    pub fn with_clock(clock: C) -> Self {
        let swept = clock.now();
        Self { clock, rates: HashMap::new(), failures: HashMap::new(), swept }
    }

    /// Answers the checks in order. The first refusal ends the run: later
    /// checks are answered "allowed" without being applied, so a request
    /// refused by one limit does not also spend another's budget.
    pub fn apply(&mut self, checks: &[LimitCheck]) -> Vec<Verdict> {
        let now = self.clock.now();
        self.sweep(now);
        let mut refused = false;
        checks
            .iter()
            .map(|check| {
                if refused {
                    return Verdict::ALLOWED;
                }
                let verdict = self.one(check, now);
                refused = !verdict.allowed;
                verdict
            })
            .collect()
    }

    fn one(&mut self, check: &LimitCheck, now: C::Instant) -> Verdict {
        match check.kind {
            LimitKind::Rate { burst, period_ms } => {
                let Some(burst) = NonZeroU32::new(burst) else { return Verdict::ALLOWED };
                let limiter = self.rates.entry((burst.get(), period_ms)).or_insert_with(|| {
                    let period = Duration::from_millis(period_ms.max(1)) / burst.get();
                    let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                        .expect("a period of at least 1 ns")
                        .allow_burst(burst);
                    Limiter::<C>::new(quota, HashMapStateStore::default(), self.clock.clone())
                });
                match limiter.check_key(&check.key) {
                    Ok(state) => Verdict {
                        allowed: true,
                        retry_after_ms: 0,
                        remaining: state.remaining_burst_capacity(),
                    },
                    Err(not_until) => Verdict {
                        allowed: false,
                        retry_after_ms: millis_ceil(not_until.wait_time_from(now)),
                        remaining: 0,
                    },
                }
            }
            LimitKind::Backoff => match self.failures.get(&check.key).and_then(|f| f.blocked_until) {
                Some(until) if until > now => Verdict {
                    allowed: false,
                    retry_after_ms: millis_ceil(until.duration_since(now).into()),
                    remaining: 0,
                },
                _ => Verdict::ALLOWED,
            },
            LimitKind::Fail { free, base_ms, max_ms } => {
                let entry = self.failures.entry(check.key.clone()).or_insert(Failures {
                    count: 0,
                    blocked_until: None,
                    last: now,
                });
                entry.count = entry.count.saturating_add(1);
                entry.last = now;
                if entry.count <= free {
                    return Verdict::ALLOWED;
                }
                let doublings = (entry.count - free - 1).min(40);
                let delay = base_ms.saturating_mul(1u64 << doublings).min(max_ms);
                entry.blocked_until = Some(now + Duration::from_millis(delay).into());
                Verdict { allowed: true, retry_after_ms: delay, remaining: 0 }
            }
            LimitKind::Forgive => {
                self.failures.remove(&check.key);
                Verdict::ALLOWED
            }
        }
    }

    /// Drops keys nobody asked about for a while, so an attacker cycling
    /// through addresses cannot grow the tables without bound.
    fn sweep(&mut self, now: C::Instant) {
        if Duration::from(now.duration_since(self.swept)) < SWEEP_EVERY {
            return;
        }
        self.swept = now;
        for limiter in self.rates.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.failures.retain(|_, f| Duration::from(now.duration_since(f.last)) < FORGET_AFTER);
    }

    /// Keys held, for tests and metrics.
    pub fn len(&self) -> usize {
        self.rates.values().map(|l| l.len()).sum::<usize>() + self.failures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn millis_ceil(wait: Duration) -> u64 {
    let ms = wait.as_micros().div_ceil(1000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn rate(key: &str, burst: u32, period_ms: u64) -> LimitCheck {
        LimitCheck { key: key.into(), kind: LimitKind::Rate { burst, period_ms } }
    }

    fn check(key: &str, kind: LimitKind) -> LimitCheck {
        LimitCheck { key: key.into(), kind }
    }

    #[test]
    fn a_rate_allows_its_burst_then_refills_evenly() {
        let clock = FakeRelativeClock::default();
        let mut limits = Limits::with_clock(clock.clone());
        let burst: Vec<Verdict> = (0..3).map(|_| limits.apply(&[rate("a", 3, 3000)])[0]).collect();
        assert!(burst.iter().all(|v| v.allowed));
        assert_eq!(burst.iter().map(|v| v.remaining).collect::<Vec<_>>(), [2, 1, 0]);
        let refused = limits.apply(&[rate("a", 3, 3000)])[0];
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 1000, "one request per second comes back");
        assert!(limits.apply(&[rate("b", 3, 3000)])[0].allowed, "another key has its own budget");
        clock.advance(Duration::from_millis(1000));
        assert!(limits.apply(&[rate("a", 3, 3000)])[0].allowed);
        assert!(!limits.apply(&[rate("a", 3, 3000)])[0].allowed);
        assert!(limits.apply(&[rate("a", 0, 1000)])[0].allowed, "a zero burst is no limit");
    }

    #[test]
    fn the_first_refusal_spends_no_other_budget() {
        let mut limits = Limits::with_clock(FakeRelativeClock::default());
        limits.apply(&[rate("ip", 1, 1000)]);
        let verdicts = limits.apply(&[rate("ip", 1, 1000), rate("user", 1, 1000)]);
        assert!(!verdicts[0].allowed && verdicts[1].allowed);
        assert!(limits.apply(&[rate("user", 1, 1000)])[0].allowed, "the user's budget was not spent");
    }

    #[test]
    fn failures_past_the_free_ones_back_off_doubling_up_to_the_cap_and_a_success_forgives() {
        let clock = FakeRelativeClock::default();
        let mut limits = Limits::with_clock(clock.clone());
        let fail = LimitKind::Fail { free: 2, base_ms: 1000, max_ms: 5000 };
        let mut delays = Vec::new();
        for _ in 0..6 {
            assert!(limits.apply(&[check("ada", LimitKind::Backoff)])[0].allowed);
            delays.push(limits.apply(&[check("ada", fail)])[0].retry_after_ms);
            let blocked = limits.apply(&[check("ada", LimitKind::Backoff)])[0];
            assert_eq!(blocked.allowed, delays.last() == Some(&0));
            clock.advance(Duration::from_millis(5000));
        }
        assert_eq!(delays, [0, 0, 1000, 2000, 4000, 5000]);
        limits.apply(&[check("ada", fail)]);
        let waiting = limits.apply(&[check("ada", LimitKind::Backoff)])[0];
        assert_eq!((waiting.allowed, waiting.retry_after_ms), (false, 5000));
        limits.apply(&[check("ada", LimitKind::Forgive)]);
        assert!(limits.apply(&[check("ada", LimitKind::Backoff)])[0].allowed);
        assert_eq!(limits.apply(&[check("ada", fail)])[0].retry_after_ms, 0, "counting starts again");
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let clock = FakeRelativeClock::default();
        let mut limits = Limits::with_clock(clock.clone());
        limits.apply(&[rate("a", 2, 1000), check("b", LimitKind::Fail { free: 0, base_ms: 10, max_ms: 10 })]);
        assert_eq!(limits.len(), 2);
        clock.advance(FORGET_AFTER + SWEEP_EVERY);
        limits.apply(&[]);
        assert!(limits.is_empty(), "{} keys left", limits.len());
    }
}

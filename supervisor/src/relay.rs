//! The pub/sub relay between workers: a worker publishes, the supervisor
//! delivers to every other serving worker, and tells the publisher once all
//! of them acknowledged (or died, or [`PUBLISH_TIMEOUT`] passed). The
//! application uses it for cache invalidation, where a writer must not
//! answer its client before the other workers dropped their copy.
//!
//! Pure bookkeeping: the supervisor sends the messages; this says to whom
//! and when the publisher is answered.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::watch::WorkerId;

/// How long a publish waits for slow recipients before the publisher is
/// told it is done anyway. A healthy worker acknowledges in well under a
/// millisecond; one that is stuck must not stall writes on the others.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_millis(250);

/// A publish: its publisher and the publisher's sequence number.
pub type PublishId = (WorkerId, u64);

/// A publish waiting for its recipients' acknowledgements.
struct Pending {
    waiting: HashSet<WorkerId>,
    deadline: Instant,
}

/// Every publish not yet answered.
#[derive(Default)]
pub struct Relay {
    pending: BTreeMap<PublishId, Pending>,
}

/// A publish answered because its time ran out, and who never acknowledged.
pub struct Late {
    pub publish: PublishId,
    pub slow: Vec<WorkerId>,
}

impl Relay {
    /// Records a publish delivered to `recipients`. True when there are
    /// none: answer the publisher now.
    pub fn publish(&mut self, publish: PublishId, recipients: HashSet<WorkerId>, now: Instant) -> bool {
        if recipients.is_empty() {
            return true;
        }
        self.pending.insert(publish, Pending { waiting: recipients, deadline: now + PUBLISH_TIMEOUT });
        false
    }

    /// `by` acknowledged `publish`. True when it was the last: answer the
    /// publisher.
    pub fn delivered(&mut self, publish: PublishId, by: WorkerId) -> bool {
        let Some(pending) = self.pending.get_mut(&publish) else { return false };
        pending.waiting.remove(&by);
        if pending.waiting.is_empty() {
            self.pending.remove(&publish);
            return true;
        }
        false
    }

    /// A worker is gone: it acknowledges nothing and wants no answers. The
    /// publishes that were waiting only for it, to answer now.
    pub fn forget(&mut self, gone: WorkerId) -> Vec<PublishId> {
        self.pending.retain(|&(origin, _), _| origin != gone);
        let done: Vec<PublishId> = self
            .pending
            .iter_mut()
            .filter_map(|(&key, pending)| {
                pending.waiting.remove(&gone);
                pending.waiting.is_empty().then_some(key)
            })
            .collect();
        for key in &done {
            self.pending.remove(key);
        }
        done
    }

    /// The publishes whose time ran out by `now`, to answer anyway.
    pub fn expire(&mut self, now: Instant) -> Vec<Late> {
        let late: Vec<PublishId> =
            self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(&key, _)| key).collect();
        late.into_iter()
            .filter_map(|publish| {
                let pending = self.pending.remove(&publish)?;
                Some(Late { publish, slow: pending.waiting.into_iter().collect() })
            })
            .collect()
    }

    /// When the next publish runs out of time.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[WorkerId]) -> HashSet<WorkerId> {
        ids.iter().copied().collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_publish_is_answered_once_every_recipient_acknowledged() {
        let mut relay = Relay::default();
        let now = Instant::now();
        assert!(relay.publish((1, 1), ids(&[]), now), "nobody to wait for");
        assert!(!relay.publish((1, 2), ids(&[2, 3]), now));
        assert!(!relay.delivered((1, 2), 2));
        assert!(!relay.delivered((1, 2), 2), "a repeated acknowledgement changes nothing");
        assert!(relay.delivered((1, 2), 3));
        assert!(!relay.delivered((1, 2), 3), "answered once");
        assert_eq!(relay.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_recipient_is_not_waited_for_and_a_dead_publisher_gets_no_answer() {
        let mut relay = Relay::default();
        let now = Instant::now();
        relay.publish((1, 1), ids(&[2, 3]), now);
        relay.publish((2, 1), ids(&[1]), now);
        relay.publish((3, 1), ids(&[2]), now);
        relay.delivered((1, 1), 3);
        // Worker 2 dies: its own publish is dropped; the two waiting only
        // for it are answered.
        let mut done = relay.forget(2);
        done.sort();
        assert_eq!(done, [(1, 1), (3, 1)]);
        assert_eq!(relay.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_recipient_holds_a_publish_only_until_the_timeout() {
        let mut relay = Relay::default();
        let start = Instant::now();
        relay.publish((1, 1), ids(&[2, 3]), start);
        relay.delivered((1, 1), 2);
        assert_eq!(relay.next_deadline(), Some(start + PUBLISH_TIMEOUT));
        assert!(relay.expire(start + PUBLISH_TIMEOUT - Duration::from_millis(1)).is_empty());
        let late = relay.expire(start + PUBLISH_TIMEOUT);
        assert_eq!(late.len(), 1);
        assert_eq!((late[0].publish, late[0].slow.clone()), ((1, 1), vec![3]));
        assert!(!relay.delivered((1, 1), 3), "already answered");
    }
}

//! Replacing workers one slot at a time without dropping a request: a
//! rolling restart of every slot (SIGHUP, `drover ctl reload`) or the
//! recycling of one (max requests, max RSS). For each slot in turn a new
//! worker starts; once it is ready the old one drains; once the old one
//! has exited the next slot follows. The old worker serves until its
//! replacement is ready, so a replacement that fails to boot aborts the
//! rollout with nothing lost.
//!
//! Pure state: the supervisor starts and drains the workers this names.

use std::collections::VecDeque;

use crate::slots::SlotId;
use crate::watch::WorkerId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Every slot, in order.
    Rolling,
    /// One slot whose worker passed a limit, and which.
    Recycle(&'static str),
}

/// A rollout in progress.
#[derive(Debug)]
pub struct Rollout {
    kind: Kind,
    /// Slots still to replace, in order.
    pending: VecDeque<SlotId>,
    /// The slot being replaced now.
    step: Option<Step>,
    /// Another rolling restart was asked for during this one: run it after.
    again: bool,
}

/// One slot being replaced: its new worker, then the old one draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub slot: SlotId,
    pub new: WorkerId,
    /// The worker it replaces; none when the slot had none (it crashed).
    pub old: Option<WorkerId>,
    old_draining: bool,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start a replacement for this slot, then call [`Rollout::started`].
    Start(SlotId),
    /// Every slot is replaced. `again`: start another rolling restart.
    Finished { kind: Kind, again: bool },
}

impl Rollout {
    /// Every one of `slots`, in order.
    pub fn rolling(slots: impl IntoIterator<Item = SlotId>) -> Self {
        Self { kind: Kind::Rolling, pending: slots.into_iter().collect(), step: None, again: false }
    }

    /// One slot, because of `reason`.
    pub fn recycle(slot: SlotId, reason: &'static str) -> Self {
        Self { kind: Kind::Recycle(reason), pending: VecDeque::from([slot]), step: None, again: false }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// A rolling restart was asked for during this one.
    pub fn run_again(&mut self) {
        self.again = true;
    }

    /// The step before is done (or there was none): what comes next.
    pub fn advance(&mut self) -> Next {
        self.step = None;
        match self.pending.pop_front() {
            Some(slot) => Next::Start(slot),
            None => Next::Finished { kind: self.kind, again: self.again },
        }
    }

    /// The replacement for `slot` started as `new`, to replace `old`.
    pub fn started(&mut self, slot: SlotId, new: WorkerId, old: Option<WorkerId>) {
        self.step = Some(Step { slot, new, old, old_draining: false });
    }

    /// Whether `id` is the replacement being started now.
    pub fn is_replacement(&self, id: WorkerId) -> bool {
        self.step.is_some_and(|step| step.new == id)
    }

    /// The replacement is ready: it takes the slot, and the old worker (if
    /// any) is to drain. The step, to act on.
    pub fn replacement_ready(&mut self) -> Option<Step> {
        let step = self.step.as_mut()?;
        step.old_draining = true;
        Some(*step)
    }

    /// Whether `id` is the old worker of this step, drained after its
    /// replacement was ready: its exit ends the step.
    pub fn is_draining_old(&self, id: WorkerId) -> bool {
        self.step.is_some_and(|step| step.old_draining && step.old == Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SlotId::{Http, Jobs};

    #[test]
    fn a_rolling_restart_replaces_each_slot_after_the_last_one_finished() {
        let mut rollout = Rollout::rolling([Http(0), Jobs(0)]);
        assert_eq!(rollout.advance(), Next::Start(Http(0)));
        rollout.started(Http(0), 10, Some(1));
        assert!(rollout.is_replacement(10) && !rollout.is_replacement(1));
        assert!(!rollout.is_draining_old(1), "the old worker serves until the new one is ready");
        let step = rollout.replacement_ready().unwrap();
        assert_eq!((step.slot, step.new, step.old), (Http(0), 10, Some(1)));
        assert!(rollout.is_draining_old(1));
        assert_eq!(rollout.advance(), Next::Start(Jobs(0)), "job slots follow the HTTP ones");
        rollout.started(Jobs(0), 11, None);
        assert_eq!(rollout.replacement_ready().unwrap().old, None, "a crashed slot has nothing to drain");
        assert_eq!(rollout.advance(), Next::Finished { kind: Kind::Rolling, again: false });
    }

    #[test]
    fn a_reload_asked_for_during_one_runs_after_it() {
        let mut rollout = Rollout::rolling([Http(0)]);
        rollout.advance();
        rollout.started(Http(0), 5, Some(4));
        rollout.run_again();
        rollout.replacement_ready();
        assert_eq!(rollout.advance(), Next::Finished { kind: Kind::Rolling, again: true });
    }

    #[test]
    fn a_recycle_replaces_one_slot_and_says_why() {
        let mut rollout = Rollout::recycle(Http(3), "max_rss");
        assert_eq!(rollout.advance(), Next::Start(Http(3)));
        rollout.started(Http(3), 9, Some(2));
        rollout.replacement_ready();
        assert_eq!(rollout.advance(), Next::Finished { kind: Kind::Recycle("max_rss"), again: false });
    }

    #[test]
    fn only_the_step_s_own_workers_move_it() {
        let mut rollout = Rollout::rolling([Http(0)]);
        rollout.advance();
        rollout.started(Http(0), 7, Some(6));
        rollout.replacement_ready();
        assert!(!rollout.is_draining_old(7) && !rollout.is_draining_old(99));
        assert!(!rollout.is_replacement(6));
    }
}

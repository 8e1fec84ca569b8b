//! Changing the number of workers at run time (`drover ctl scale N`,
//! SIGTTIN/SIGTTOU): whether a change may start now, and what it is. Up
//! adds slots, each with its sockets and a worker; down retires the highest
//! slots (steered away from first, see [`crate::steer`]), whose workers
//! accept what was queued, drain, and then their sockets close.

use std::ops::Range;

use drover_protocol::ctl::Phase;

/// Most workers a supervisor runs (as `server.workers` allows).
pub const MAX_WORKERS: usize = 1024;

/// What a scale request means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// New slots to add.
    Up(Range<usize>),
    /// Slots to retire (the highest).
    Down(Range<usize>),
    /// Already there.
    Same,
}

/// The plan for going from `current` workers to `target`, or why not now.
/// `busy`: a rolling restart or recycle is replacing workers;
/// `retiring`: an earlier scale-down is still draining.
pub fn plan(current: usize, target: usize, phase: Phase, busy: bool, retiring: bool) -> Result<Plan, String> {
    if !(1..=MAX_WORKERS).contains(&target) {
        return Err(format!("the number of workers must be 1 to {MAX_WORKERS}"));
    }
    if phase != Phase::Running || busy {
        return Err(format!("busy ({}); try again when it is done", phase.as_str()));
    }
    if retiring {
        return Err("a scale-down is still draining; try again when it is done".into());
    }
    Ok(match target.cmp(&current) {
        std::cmp::Ordering::Greater => Plan::Up(current..target),
        std::cmp::Ordering::Less => Plan::Down(target..current),
        std::cmp::Ordering::Equal => Plan::Same,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_adds_the_next_slots_and_down_retires_the_highest() {
        assert_eq!(plan(2, 4, Phase::Running, false, false), Ok(Plan::Up(2..4)));
        assert_eq!(plan(4, 1, Phase::Running, false, false), Ok(Plan::Down(1..4)));
        assert_eq!(plan(3, 3, Phase::Running, false, false), Ok(Plan::Same));
    }

    #[test]
    fn a_change_waits_for_the_one_before_and_stays_in_bounds() {
        for target in [0, MAX_WORKERS + 1] {
            assert!(plan(2, target, Phase::Running, false, false).unwrap_err().contains("1 to 1024"));
        }
        assert!(plan(2, 3, Phase::Booting, false, false).unwrap_err().starts_with("busy (booting)"));
        assert!(plan(2, 3, Phase::Running, true, false).unwrap_err().starts_with("busy (running)"));
        assert!(plan(2, 3, Phase::Running, false, true).unwrap_err().contains("still draining"));
    }
}

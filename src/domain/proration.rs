//! Changing a subscription's plan partway through a period, to the second,
//! as the billing systems users know do it: a credit for the unused part of
//! the current plan and a charge for the rest of the period on the new one,
//! each `round(price × remaining / period)`, half away from zero.
//!
//! The period stays when the interval does. A change of interval (month to
//! year) ends the period now and starts a new one: the new plan is charged
//! in full, less the credit.

use std::time::SystemTime;

use super::money::{Money, MoneyError};
use super::time::{period_end, Interval};

/// A plan's price and how often it renews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanTerms {
    pub price: Money,
    pub interval: Interval,
}

/// A billing period: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: SystemTime,
    pub end: SystemTime,
}

/// Why a change cannot be prorated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProrationError {
    #[error("the change is not within the current period")]
    OutsidePeriod,
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// One line of a proration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProrationLine {
    pub kind: LineKind,
    /// Negative for a credit.
    pub amount: Money,
    /// The time it covers.
    pub from: SystemTime,
    pub to: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// The unused part of the plan being left.
    Credit,
    /// The new plan, for the rest of the period (or a whole new one).
    Charge,
}

/// What a plan change costs, and the period it leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proration {
    pub lines: Vec<ProrationLine>,
    pub total: Money,
    pub period: Period,
}

fn seconds(from: SystemTime, to: SystemTime) -> i64 {
    to.duration_since(from).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Prorates a change from `current` to `new` at `at`, within `period`.
pub fn prorate_change(
    current: PlanTerms,
    new: PlanTerms,
    period: Period,
    at: SystemTime,
) -> Result<Proration, ProrationError> {
    if at < period.start || at >= period.end {
        return Err(ProrationError::OutsidePeriod);
    }
    let currency = current.price.currency;
    if new.price.currency != currency {
        return Err(MoneyError::MixedCurrencies(currency, new.price.currency).into());
    }
    let length = seconds(period.start, period.end);
    let remaining = seconds(at, period.end);
    let credit = ProrationLine {
        kind: LineKind::Credit,
        amount: current.price.prorated(remaining, length)?.negated(),
        from: at,
        to: period.end,
    };
    let (charge, period) = if new.interval == current.interval {
        let amount = new.price.prorated(remaining, length)?;
        (ProrationLine { kind: LineKind::Charge, amount, from: at, to: period.end }, period)
    } else {
        let next = Period { start: at, end: period_end(at, new.interval, 1) };
        (ProrationLine { kind: LineKind::Charge, amount: new.price, from: next.start, to: next.end }, next)
    };
    let total = Money::sum(currency, [credit.amount, charge.amount])?;
    Ok(Proration { lines: vec![credit, charge], total, period })
}

/// The credit for ending a subscription at `at` instead of at the end of
/// its period (a cancellation that takes effect now).
pub fn credit_for_unused(
    terms: PlanTerms,
    period: Period,
    at: SystemTime,
) -> Result<ProrationLine, ProrationError> {
    if at < period.start || at >= period.end {
        return Err(ProrationError::OutsidePeriod);
    }
    let amount = terms.price.prorated(seconds(at, period.end), seconds(period.start, period.end))?.negated();
    Ok(ProrationLine { kind: LineKind::Credit, amount, from: at, to: period.end })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::domain::money::Currency;

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::parse("EUR").unwrap())
    }

    fn monthly(amount: i64) -> PlanTerms {
        PlanTerms { price: eur(amount), interval: Interval::Month }
    }

    fn start() -> SystemTime {
        humantime::parse_rfc3339("2027-04-01T00:00:00Z").unwrap()
    }

    const DAY: u64 = 86_400;

    fn after(start: SystemTime, seconds: u64) -> SystemTime {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn the_worked_example_half_way_through_a_30_day_period() {
        let period = Period { start: start(), end: after(start(), 30 * DAY) };
        let change = prorate_change(monthly(3000), monthly(6000), period, after(start(), 15 * DAY)).unwrap();
        let amounts: Vec<i64> = change.lines.iter().map(|l| l.amount.amount).collect();
        assert_eq!(amounts, [-1500, 3000]);
        assert_eq!(change.total, eur(1500));
        assert_eq!(change.period, period, "the period stays when the interval does");
    }

    #[test]
    fn a_change_of_interval_starts_a_new_period_and_charges_in_full() {
        let period = Period { start: start(), end: after(start(), 30 * DAY) };
        let at = after(start(), 10 * DAY);
        let yearly = PlanTerms { price: eur(30_000), interval: Interval::Year };
        let change = prorate_change(monthly(3000), yearly, period, at).unwrap();
        assert_eq!(change.lines[0].amount, eur(-2000));
        assert_eq!(change.lines[1].amount, eur(30_000));
        assert_eq!(change.total, eur(28_000));
        assert_eq!(change.period, Period { start: at, end: period_end(at, Interval::Year, 1) });
    }

    #[test]
    fn changes_outside_the_period_or_across_currencies_are_refused() {
        let period = Period { start: start(), end: after(start(), 30 * DAY) };
        assert_eq!(
            prorate_change(monthly(1), monthly(2), period, period.end),
            Err(ProrationError::OutsidePeriod)
        );
        let usd =
            PlanTerms { price: Money::new(1, Currency::parse("USD").unwrap()), interval: Interval::Month };
        assert!(matches!(
            prorate_change(monthly(1), usd, period, start()),
            Err(ProrationError::Money(MoneyError::MixedCurrencies(..)))
        ));
        assert_eq!(
            credit_for_unused(monthly(3000), period, after(start(), 20 * DAY)).unwrap().amount,
            eur(-1000)
        );
    }

    /// A period of 1 to 400 days, a price of up to 1,000,000.00, and two
    /// instants within the period.
    fn setting() -> impl Strategy<Value = (u64, i64, i64, i64, u64, u64)> {
        (1..=400u64).prop_flat_map(|days| {
            let length = days * DAY;
            (Just(length), 0..=100_000_000i64, 0..=100_000_000i64, 0..=100_000_000i64, 0..length, 0..length)
        })
    }

    proptest! {
        #[test]
        fn a_change_and_its_reverse_at_the_same_instant_net_to_nothing(
            (length, a, b, _c, t, _u) in setting()
        ) {
            let period = Period { start: start(), end: after(start(), length) };
            let at = after(start(), t);
            let there = prorate_change(monthly(a), monthly(b), period, at).unwrap();
            let back = prorate_change(monthly(b), monthly(a), period, at).unwrap();
            let net = there.total.amount + back.total.amount;
            prop_assert!(net.abs() <= (there.lines.len() + back.lines.len()) as i64);
        }

        #[test]
        fn lines_never_exceed_the_plan_prices((length, a, b, _c, t, _u) in setting()) {
            let period = Period { start: start(), end: after(start(), length) };
            let change = prorate_change(monthly(a), monthly(b), period, after(start(), t)).unwrap();
            prop_assert!(-change.lines[0].amount.amount <= a && change.lines[0].amount.amount <= 0);
            prop_assert!(change.lines[1].amount.amount <= b && change.lines[1].amount.amount >= 0);
        }

        #[test]
        fn several_changes_in_one_period_are_the_sum_of_their_parts(
            (length, a, b, c, t1, t2) in setting()
        ) {
            let (t1, t2) = (t1.min(t2), t1.max(t2));
            let period = Period { start: start(), end: after(start(), length) };
            let first = prorate_change(monthly(a), monthly(b), period, after(start(), t1)).unwrap();
            let second = prorate_change(monthly(b), monthly(c), period, after(start(), t2)).unwrap();
            // Paid: the first plan up front, then both prorations. Used: each
            // plan for its part of the period, exactly (scaled by `length`).
            let paid = i128::from(a + first.total.amount + second.total.amount);
            let used = i128::from(a) * i128::from(t1)
                + i128::from(b) * i128::from(t2 - t1)
                + i128::from(c) * i128::from(length - t2);
            let length = i128::from(length);
            // Four rounded lines, each off by at most half a minor unit.
            prop_assert!((paid * length - used).abs() <= 2 * length);
        }

        #[test]
        fn month_ends_follow_the_anchor_day(days in 0i64..50_000, n in 1u32..36) {
            let anchor = std::time::UNIX_EPOCH + Duration::from_secs((days * 86_400) as u64);
            let end = period_end(anchor, Interval::Month, n);
            let day = |t: SystemTime| humantime::format_rfc3339(t).to_string()[8..10].parse::<u32>().unwrap();
            let month_len = |t: SystemTime| {
                let s = humantime::format_rfc3339(t).to_string();
                let (y, m): (i64, u32) = (s[0..4].parse().unwrap(), s[5..7].parse().unwrap());
                match m { 2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29, 2 => 28, 4 | 6 | 9 | 11 => 30, _ => 31 }
            };
            prop_assert_eq!(day(end), day(anchor).min(month_len(end)));
        }
    }
}

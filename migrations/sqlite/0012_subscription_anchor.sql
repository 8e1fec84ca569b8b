-- Where a subscription's periods are counted from: period n ends n months
-- (or years) after the anchor, on its day of the month clamped to the
-- month's length, so 31 Jan -> 28 Feb -> 31 Mar rather than drifting to
-- the 28th. The first period's start, or the start of the period a change
-- of interval began. Existing rows count from their current period.
ALTER TABLE subscriptions ADD COLUMN period_anchor BIGINT NOT NULL DEFAULT 0;
UPDATE subscriptions SET period_anchor = period_start;
-- subscriptions.renew looks for active subscriptions whose period ended.
CREATE INDEX IF NOT EXISTS subscriptions_due ON subscriptions (status, period_end);

-- Subscriptions, their invoices, and the per-year counter that numbers
-- invoices without gaps (taken inside the transaction that creates the
-- invoice).
CREATE TABLE subscriptions (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id              INTEGER NOT NULL REFERENCES users (id),
    plan_id              INTEGER NOT NULL REFERENCES plans (id),
    status               VARCHAR(16) NOT NULL CHECK (status IN ('active', 'cancelled')),
    period_start         INTEGER NOT NULL,
    period_end           INTEGER NOT NULL,
    cancel_at_period_end INTEGER NOT NULL DEFAULT 0,
    cancelled_at         INTEGER,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);
CREATE INDEX subscriptions_user ON subscriptions (user_id, id);

CREATE TABLE invoice_counters (
    year        INTEGER NOT NULL PRIMARY KEY,
    last_number INTEGER NOT NULL
);

CREATE TABLE invoices (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    number          VARCHAR(32) NOT NULL UNIQUE,
    user_id         INTEGER NOT NULL REFERENCES users (id),
    subscription_id INTEGER REFERENCES subscriptions (id),
    currency        VARCHAR(3) NOT NULL,
    total_amount    INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX invoices_user ON invoices (user_id, id);

CREATE TABLE invoice_lines (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    invoice_id   INTEGER NOT NULL REFERENCES invoices (id),
    kind         VARCHAR(8) NOT NULL CHECK (kind IN ('charge', 'credit')),
    description  VARCHAR(300) NOT NULL,
    amount       INTEGER NOT NULL,
    period_start INTEGER NOT NULL,
    period_end   INTEGER NOT NULL
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id, id);

-- Subscriptions, their invoices, and the per-year counter that numbers
-- invoices without gaps (taken inside the transaction that creates the
-- invoice).
CREATE TABLE subscriptions (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id              BIGINT NOT NULL REFERENCES users (id),
    plan_id              BIGINT NOT NULL REFERENCES plans (id),
    status               VARCHAR(16) NOT NULL CHECK (status IN ('active', 'cancelled')),
    period_start         BIGINT NOT NULL,
    period_end           BIGINT NOT NULL,
    cancel_at_period_end BIGINT NOT NULL DEFAULT 0,
    cancelled_at         BIGINT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX subscriptions_user ON subscriptions (user_id, id);

CREATE TABLE invoice_counters (
    year        BIGINT NOT NULL PRIMARY KEY,
    last_number BIGINT NOT NULL
);

CREATE TABLE invoices (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number          VARCHAR(32) NOT NULL UNIQUE,
    user_id         BIGINT NOT NULL REFERENCES users (id),
    subscription_id BIGINT REFERENCES subscriptions (id),
    currency        VARCHAR(3) NOT NULL,
    total_amount    BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX invoices_user ON invoices (user_id, id);

CREATE TABLE invoice_lines (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id   BIGINT NOT NULL REFERENCES invoices (id),
    kind         VARCHAR(8) NOT NULL CHECK (kind IN ('charge', 'credit')),
    description  VARCHAR(300) NOT NULL,
    amount       BIGINT NOT NULL,
    period_start BIGINT NOT NULL,
    period_end   BIGINT NOT NULL
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id, id);

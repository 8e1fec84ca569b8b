-- Subscriptions, their invoices, and the per-year counter that numbers
-- invoices without gaps (taken inside the transaction that creates the
-- invoice). Each statement can be re-run (MariaDB cannot roll back DDL).
CREATE TABLE IF NOT EXISTS subscriptions (
    id                   BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id              BIGINT NOT NULL,
    plan_id              BIGINT NOT NULL,
    status               VARCHAR(16) NOT NULL CHECK (status IN ('active', 'cancelled')),
    period_start         BIGINT NOT NULL,
    period_end           BIGINT NOT NULL,
    cancel_at_period_end BIGINT NOT NULL DEFAULT 0,
    cancelled_at         BIGINT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    KEY subscriptions_user (user_id, id),
    CONSTRAINT subscriptions_user_fk FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT subscriptions_plan_fk FOREIGN KEY (plan_id) REFERENCES plans (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS invoice_counters (
    year        BIGINT NOT NULL PRIMARY KEY,
    last_number BIGINT NOT NULL
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS invoices (
    id              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    number          VARCHAR(32) NOT NULL,
    user_id         BIGINT NOT NULL,
    subscription_id BIGINT,
    currency        VARCHAR(3) NOT NULL,
    total_amount    BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    UNIQUE KEY invoices_number (number),
    KEY invoices_user (user_id, id),
    CONSTRAINT invoices_user_fk FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT invoices_subscription_fk FOREIGN KEY (subscription_id) REFERENCES subscriptions (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS invoice_lines (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    invoice_id   BIGINT NOT NULL,
    kind         VARCHAR(8) NOT NULL CHECK (kind IN ('charge', 'credit')),
    description  VARCHAR(300) NOT NULL,
    amount       BIGINT NOT NULL,
    period_start BIGINT NOT NULL,
    period_end   BIGINT NOT NULL,
    KEY invoice_lines_invoice (invoice_id, id),
    CONSTRAINT invoice_lines_invoice_fk FOREIGN KEY (invoice_id) REFERENCES invoices (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

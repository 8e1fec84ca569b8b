-- Jobs: the transactional outbox, the embedded queue, handled messages and
-- the notifications their handler writes. Times are Unix milliseconds.

-- Events, written in the transaction of the change that causes them; the
-- relay publishes each and only then sets `published_at`.
CREATE TABLE IF NOT EXISTS outbox (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     VARCHAR(32) NOT NULL UNIQUE,
    kind         VARCHAR(64) NOT NULL,
    payload      TEXT        NOT NULL,
    created_at   BIGINT      NOT NULL,
    published_at BIGINT
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (published_at, id);

-- The embedded queue (no jobs.broker_url): one row per event and queue.
-- A consumer claims rows whose lease (`locked_until`) has run out; a
-- handled one is deleted, a failed one waits until `available_at`, and one
-- out of attempts is dead (`dead_at`, with its last error).
CREATE TABLE IF NOT EXISTS job_messages (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue        VARCHAR(64) NOT NULL,
    event_id     VARCHAR(32) NOT NULL,
    kind         VARCHAR(64) NOT NULL,
    payload      TEXT        NOT NULL,
    attempts     BIGINT      NOT NULL DEFAULT 0,
    available_at BIGINT      NOT NULL,
    locked_until BIGINT      NOT NULL DEFAULT 0,
    claim        VARCHAR(32),
    dead_at      BIGINT,
    last_error   TEXT,
    created_at   BIGINT      NOT NULL,
    CONSTRAINT job_messages_event UNIQUE (queue, event_id)
);
CREATE INDEX IF NOT EXISTS job_messages_ready ON job_messages (queue, dead_at, available_at);

-- Messages a handler has applied, written in the transaction of its
-- effect: a message delivered twice is applied once.
CREATE TABLE IF NOT EXISTS processed_messages (
    handler      VARCHAR(64) NOT NULL,
    event_id     VARCHAR(32) NOT NULL,
    processed_at BIGINT      NOT NULL,
    PRIMARY KEY (handler, event_id)
);

-- What a user is told about their orders and invoices (the stand-in for
-- an email).
CREATE TABLE IF NOT EXISTS notifications (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    BIGINT       NOT NULL REFERENCES users (id),
    kind       VARCHAR(64)  NOT NULL,
    message    VARCHAR(500) NOT NULL,
    event_id   VARCHAR(32)  NOT NULL,
    created_at BIGINT       NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_user ON notifications (user_id, id);

CREATE INDEX IF NOT EXISTS job_messages_claim ON job_messages (claim);

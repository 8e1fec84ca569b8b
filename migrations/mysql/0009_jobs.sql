-- Jobs: the transactional outbox, the embedded queue, handled messages and
-- the notifications their handler writes. Times are Unix milliseconds.
-- Every statement can run again: MariaDB cannot roll back DDL.

-- Events, written in the transaction of the change that causes them; the
-- relay publishes each and only then sets `published_at`.
CREATE TABLE IF NOT EXISTS outbox (
    id           BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_id     VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    kind         VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    payload      TEXT        NOT NULL,
    created_at   BIGINT      NOT NULL,
    published_at BIGINT      NULL,
    UNIQUE KEY outbox_event (event_id),
    KEY outbox_unpublished (published_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- The embedded queue (no jobs.broker_url): one row per event and queue.
-- A consumer claims rows whose lease (`locked_until`) has run out; a
-- handled one is deleted, a failed one waits until `available_at`, and one
-- out of attempts is dead (`dead_at`, with its last error).
CREATE TABLE IF NOT EXISTS job_messages (
    id           BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    queue        VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    event_id     VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    kind         VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    payload      TEXT        NOT NULL,
    attempts     BIGINT      NOT NULL DEFAULT 0,
    available_at BIGINT      NOT NULL,
    locked_until BIGINT      NOT NULL DEFAULT 0,
    claim        VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
    dead_at      BIGINT      NULL,
    last_error   TEXT        NULL,
    created_at   BIGINT      NOT NULL,
    UNIQUE KEY job_messages_event (queue, event_id),
    KEY job_messages_ready (queue, dead_at, available_at),
    KEY job_messages_claim (claim)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Messages a handler has applied, written in the transaction of its
-- effect: a message delivered twice is applied once.
CREATE TABLE IF NOT EXISTS processed_messages (
    handler      VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    event_id     VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    processed_at BIGINT      NOT NULL,
    PRIMARY KEY (handler, event_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- What a user is told about their orders and invoices (the stand-in for
-- an email).
CREATE TABLE IF NOT EXISTS notifications (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id    BIGINT       NOT NULL,
    kind       VARCHAR(64)  NOT NULL,
    message    VARCHAR(500) NOT NULL,
    event_id   VARCHAR(32)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at BIGINT       NOT NULL,
    KEY notifications_user (user_id, id),
    CONSTRAINT notifications_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

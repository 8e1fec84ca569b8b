-- Idempotency keys (the Idempotency-Key header): per user, the request's
-- fingerprint and, once it has an outcome, the response to replay.
-- `status_code` is NULL while the first request runs.
CREATE TABLE idempotency_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL,
    idem_key     VARCHAR(255) NOT NULL,
    fingerprint  VARCHAR(64) NOT NULL,
    status_code  INTEGER,
    body         TEXT,
    created_at   INTEGER NOT NULL,
    locked_at    INTEGER NOT NULL,
    UNIQUE (user_id, idem_key)
);

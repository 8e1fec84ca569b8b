-- Idempotency keys (the Idempotency-Key header): per user, the request's
-- fingerprint and, once it has an outcome, the response to replay.
-- `status_code` is NULL while the first request runs.
CREATE TABLE idempotency_keys (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      BIGINT NOT NULL,
    idem_key     VARCHAR(255) NOT NULL,
    fingerprint  VARCHAR(64) NOT NULL,
    status_code  BIGINT,
    body         TEXT,
    created_at   BIGINT NOT NULL,
    locked_at    BIGINT NOT NULL,
    UNIQUE (user_id, idem_key)
);

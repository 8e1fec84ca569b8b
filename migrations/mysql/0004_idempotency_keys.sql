-- Idempotency keys (the Idempotency-Key header): per user, the request's
-- fingerprint and, once it has an outcome, the response to replay.
-- `status_code` is NULL while the first request runs.
-- Keys compare exactly (ascii_bin): `abc` and `ABC` are two keys.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id      BIGINT NOT NULL,
    idem_key     VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    fingerprint  VARCHAR(64) NOT NULL,
    status_code  BIGINT,
    body         MEDIUMTEXT,
    created_at   BIGINT NOT NULL,
    locked_at    BIGINT NOT NULL,
    UNIQUE KEY idempotency_keys_user_key (user_id, idem_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

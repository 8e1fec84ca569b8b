-- The token lifecycle. `token_version` is copied into every access and
-- refresh token; raising it (a password or email change, a role change, a
-- deletion) makes every token issued before unusable at its next request.
-- A deleted user keeps its row (orders and invoices refer to it) with its
-- email scrubbed and `deleted_at` set (Unix milliseconds).
-- Every statement can run again: MariaDB cannot roll back DDL.
ALTER TABLE users
    ADD COLUMN IF NOT EXISTS token_version BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS deleted_at BIGINT NULL;

-- Refresh tokens, stored as their SHA-256; one row per token issued. A
-- family is one login's chain of rotations: `used_at` marks a rotated
-- token, and presenting it again revokes the whole family (`revoked_at`).
CREATE TABLE IF NOT EXISTS refresh_tokens (
    id            BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    token_hash    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    family        VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id       BIGINT      NOT NULL,
    token_version BIGINT      NOT NULL,
    created_at    BIGINT      NOT NULL,
    expires_at    BIGINT      NOT NULL,
    used_at       BIGINT      NULL,
    revoked_at    BIGINT      NULL,
    UNIQUE KEY refresh_tokens_hash (token_hash),
    KEY refresh_tokens_family (family),
    KEY refresh_tokens_user (user_id),
    CONSTRAINT refresh_tokens_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

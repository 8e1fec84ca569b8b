-- The token lifecycle. `token_version` is copied into every access and
-- refresh token; raising it (a password or email change, a role change, a
-- deletion) makes every token issued before unusable at its next request.
-- A deleted user keeps its row (orders and invoices refer to it) with its
-- email scrubbed and `deleted_at` set (Unix milliseconds, like the tables
-- of the portable statement layer).
ALTER TABLE users ADD COLUMN IF NOT EXISTS token_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN IF NOT EXISTS deleted_at BIGINT;

-- Refresh tokens, stored as their SHA-256; one row per token issued. A
-- family is one login's chain of rotations: `used_at` marks a rotated
-- token, and presenting it again revokes the whole family (`revoked_at`).
CREATE TABLE IF NOT EXISTS refresh_tokens (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash    VARCHAR(64) NOT NULL UNIQUE,
    family        VARCHAR(32) NOT NULL,
    user_id       BIGINT      NOT NULL REFERENCES users (id),
    token_version BIGINT      NOT NULL,
    created_at    BIGINT      NOT NULL,
    expires_at    BIGINT      NOT NULL,
    used_at       BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX IF NOT EXISTS refresh_tokens_user ON refresh_tokens (user_id);

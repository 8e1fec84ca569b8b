-- The token lifecycle. `token_version` is copied into every access and
-- refresh token; raising it (a password or email change, a role change, a
-- deletion) makes every token issued before unusable at its next request.
-- A deleted user keeps its row (orders and invoices refer to it) with its
-- email scrubbed and `deleted_at` set (Unix milliseconds).
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN deleted_at INTEGER;

-- Refresh tokens, stored as their SHA-256; one row per token issued. A
-- family is one login's chain of rotations: `used_at` marks a rotated
-- token, and presenting it again revokes the whole family (`revoked_at`).
CREATE TABLE refresh_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash    VARCHAR(64) NOT NULL UNIQUE,
    family        VARCHAR(32) NOT NULL,
    user_id       INTEGER     NOT NULL REFERENCES users (id),
    token_version INTEGER     NOT NULL,
    created_at    INTEGER     NOT NULL,
    expires_at    INTEGER     NOT NULL,
    used_at       INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

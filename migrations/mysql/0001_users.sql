-- Users and their credentials. Emails are stored normalised (trimmed,
-- lower-case), so the unique index is the duplicate check. Times are Unix
-- milliseconds, as on SQLite, so both share one repository implementation.
-- The collation is utf8mb4's default, which compares case- and
-- accent-insensitively: emails are already lower-cased, so only addresses
-- that differ by an accent alone would collide here and not elsewhere. (A
-- _bin collation would make the columns binary to the driver.)
CREATE TABLE users (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    email         VARCHAR(254) NOT NULL,
    name          VARCHAR(200) NOT NULL,
    role          VARCHAR(16)  NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    password_hash VARCHAR(255) NOT NULL,
    created_at    BIGINT       NOT NULL,
    updated_at    BIGINT       NOT NULL,
    UNIQUE KEY users_email (email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

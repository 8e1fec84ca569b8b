-- Uploaded files' metadata; their bytes are in the object store under
-- `store_key`, a new key for every upload. Names are per owner, compared
-- exactly (a binary collation). Times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS files (
    id           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    owner_id     BIGINT       NOT NULL,
    name         VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    store_key    VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    size         BIGINT       NOT NULL,
    sha256       VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    content_type VARCHAR(255) NOT NULL,
    created_at   BIGINT       NOT NULL,
    updated_at   BIGINT       NOT NULL,
    UNIQUE KEY files_owner_name (owner_id, name),
    CONSTRAINT files_owner_fk FOREIGN KEY (owner_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

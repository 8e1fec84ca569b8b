-- Uploaded files' metadata; their bytes are in the object store under
-- `store_key`, a new key for every upload. Names are per owner, compared
-- exactly. Times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS files (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id     BIGINT       NOT NULL REFERENCES users (id),
    name         VARCHAR(255) NOT NULL,
    store_key    VARCHAR(128) NOT NULL,
    size         BIGINT       NOT NULL,
    sha256       VARCHAR(64)  NOT NULL,
    content_type VARCHAR(255) NOT NULL,
    created_at   BIGINT       NOT NULL,
    updated_at   BIGINT       NOT NULL,
    CONSTRAINT files_owner_name UNIQUE (owner_id, name)
);

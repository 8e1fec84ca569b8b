-- Uploaded files' metadata; their bytes are in the object store under
-- `store_key`, a new key for every upload. Names are per owner, compared
-- exactly. Times are Unix milliseconds.
CREATE TABLE files (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id     INTEGER      NOT NULL REFERENCES users (id),
    name         VARCHAR(255) NOT NULL,
    store_key    VARCHAR(128) NOT NULL,
    size         INTEGER      NOT NULL,
    sha256       VARCHAR(64)  NOT NULL,
    content_type VARCHAR(255) NOT NULL,
    created_at   INTEGER      NOT NULL,
    updated_at   INTEGER      NOT NULL,
    UNIQUE (owner_id, name)
);

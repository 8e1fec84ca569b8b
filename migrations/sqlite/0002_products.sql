-- The catalog and its stock. `reserved` is held by placed orders; what can
-- still be sold is `on_hand - reserved`, which never goes negative. Times
-- are Unix milliseconds.
CREATE TABLE products (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    sku          VARCHAR(64)  NOT NULL UNIQUE,
    name         VARCHAR(200) NOT NULL,
    price_amount INTEGER      NOT NULL CHECK (price_amount >= 0),
    currency     VARCHAR(3)   NOT NULL,
    on_hand      INTEGER      NOT NULL CHECK (on_hand >= 0),
    reserved     INTEGER      NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
    created_at   INTEGER      NOT NULL,
    updated_at   INTEGER      NOT NULL
);

-- Every change of `on_hand`: adjustments by hand and shipments.
CREATE TABLE stock_movements (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER      NOT NULL REFERENCES products (id),
    delta      INTEGER      NOT NULL,
    reason     VARCHAR(200) NOT NULL,
    user_id    INTEGER,
    order_id   INTEGER,
    created_at INTEGER      NOT NULL
);
CREATE INDEX stock_movements_product ON stock_movements (product_id, id);

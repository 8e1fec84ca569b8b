-- The catalog and its stock. `reserved` is held by placed orders; what can
-- still be sold is `on_hand - reserved`, which never goes negative. Times
-- are Unix milliseconds in every table from here on, on every backend, so
-- one repository serves all three.
CREATE TABLE products (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku          VARCHAR(64)  NOT NULL,
    name         VARCHAR(200) NOT NULL,
    price_amount BIGINT       NOT NULL CHECK (price_amount >= 0),
    currency     VARCHAR(3)   NOT NULL,
    on_hand      BIGINT       NOT NULL CHECK (on_hand >= 0),
    reserved     BIGINT       NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
    created_at   BIGINT       NOT NULL,
    updated_at   BIGINT       NOT NULL,
    CONSTRAINT products_sku_key UNIQUE (sku)
);

-- Every change of `on_hand`: adjustments by hand and shipments.
CREATE TABLE stock_movements (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id BIGINT       NOT NULL REFERENCES products (id),
    delta      BIGINT       NOT NULL,
    reason     VARCHAR(200) NOT NULL,
    user_id    BIGINT,
    order_id   BIGINT,
    created_at BIGINT       NOT NULL
);
CREATE INDEX stock_movements_product ON stock_movements (product_id, id);

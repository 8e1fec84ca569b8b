-- The catalog and its stock. `reserved` is held by placed orders; what can
-- still be sold is `on_hand - reserved`, which never goes negative. Times
-- are Unix milliseconds. Each statement can be re-run (MariaDB cannot roll
-- back DDL). SKUs compare exactly (ascii_bin): `ab-1` and `AB-1` are two
-- products, as on the other backends.
CREATE TABLE IF NOT EXISTS products (
    id           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    sku          VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name         VARCHAR(200) NOT NULL,
    price_amount BIGINT       NOT NULL CHECK (price_amount >= 0),
    currency     VARCHAR(3)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    on_hand      BIGINT       NOT NULL CHECK (on_hand >= 0),
    reserved     BIGINT       NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
    created_at   BIGINT       NOT NULL,
    updated_at   BIGINT       NOT NULL,
    UNIQUE KEY products_sku (sku)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Every change of `on_hand`: adjustments by hand and shipments.
CREATE TABLE IF NOT EXISTS stock_movements (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    product_id BIGINT       NOT NULL,
    delta      BIGINT       NOT NULL,
    reason     VARCHAR(200) NOT NULL,
    user_id    BIGINT,
    order_id   BIGINT,
    created_at BIGINT       NOT NULL,
    KEY stock_movements_product (product_id, id),
    CONSTRAINT stock_movements_product_fk FOREIGN KEY (product_id) REFERENCES products (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

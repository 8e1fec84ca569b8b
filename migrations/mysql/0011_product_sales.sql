-- Per-product sales counters, kept by the `sales` job handler from
-- order.placed events (units and orders placed, cancellations included),
-- and shown by the inventory summary.
CREATE TABLE IF NOT EXISTS product_sales (
    product_id    BIGINT NOT NULL PRIMARY KEY,
    units_ordered BIGINT NOT NULL DEFAULT 0,
    orders        BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT product_sales_product_fk FOREIGN KEY (product_id) REFERENCES products (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

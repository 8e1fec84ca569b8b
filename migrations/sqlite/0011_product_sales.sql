-- Per-product sales counters, kept by the `sales` job handler from
-- order.placed events (units and orders placed, cancellations included),
-- and shown by the inventory summary.
CREATE TABLE product_sales (
    product_id    INTEGER PRIMARY KEY REFERENCES products (id),
    units_ordered BIGINT NOT NULL DEFAULT 0,
    orders        BIGINT NOT NULL DEFAULT 0
);

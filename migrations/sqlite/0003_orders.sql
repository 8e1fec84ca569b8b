-- Orders and their lines. Prices are copied onto the lines when the order
-- is placed, so a later price change does not change the order.
CREATE TABLE orders (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER     NOT NULL REFERENCES users (id),
    status       VARCHAR(16) NOT NULL CHECK (status IN ('placed', 'paid', 'shipped', 'cancelled')),
    currency     VARCHAR(3)  NOT NULL,
    total_amount INTEGER     NOT NULL,
    created_at   INTEGER     NOT NULL,
    updated_at   INTEGER     NOT NULL
);
CREATE INDEX orders_user ON orders (user_id, id);

CREATE TABLE order_lines (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id    INTEGER      NOT NULL REFERENCES orders (id),
    product_id  INTEGER      NOT NULL REFERENCES products (id),
    sku         VARCHAR(64)  NOT NULL,
    name        VARCHAR(200) NOT NULL,
    quantity    INTEGER      NOT NULL CHECK (quantity > 0),
    unit_amount INTEGER      NOT NULL,
    line_amount INTEGER      NOT NULL
);
CREATE INDEX order_lines_order ON order_lines (order_id, id);

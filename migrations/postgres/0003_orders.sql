-- Orders and their lines. Prices are copied onto the lines when the order
-- is placed, so a later price change does not change the order.
CREATE TABLE orders (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      BIGINT      NOT NULL REFERENCES users (id),
    status       VARCHAR(16) NOT NULL CHECK (status IN ('placed', 'paid', 'shipped', 'cancelled')),
    currency     VARCHAR(3)  NOT NULL,
    total_amount BIGINT      NOT NULL,
    created_at   BIGINT      NOT NULL,
    updated_at   BIGINT      NOT NULL
);
CREATE INDEX orders_user ON orders (user_id, id);

CREATE TABLE order_lines (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    BIGINT       NOT NULL REFERENCES orders (id),
    product_id  BIGINT       NOT NULL REFERENCES products (id),
    sku         VARCHAR(64)  NOT NULL,
    name        VARCHAR(200) NOT NULL,
    quantity    BIGINT       NOT NULL CHECK (quantity > 0),
    unit_amount BIGINT       NOT NULL,
    line_amount BIGINT       NOT NULL
);
CREATE INDEX order_lines_order ON order_lines (order_id, id);

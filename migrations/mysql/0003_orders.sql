-- Orders and their lines. Prices are copied onto the lines when the order
-- is placed, so a later price change does not change the order. Each
-- statement can be re-run (MariaDB cannot roll back DDL).
CREATE TABLE IF NOT EXISTS orders (
    id           BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id      BIGINT      NOT NULL,
    status       VARCHAR(16) NOT NULL CHECK (status IN ('placed', 'paid', 'shipped', 'cancelled')),
    currency     VARCHAR(3)  NOT NULL,
    total_amount BIGINT      NOT NULL,
    created_at   BIGINT      NOT NULL,
    updated_at   BIGINT      NOT NULL,
    KEY orders_user (user_id, id),
    CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS order_lines (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_id    BIGINT       NOT NULL,
    product_id  BIGINT       NOT NULL,
    sku         VARCHAR(64)  NOT NULL,
    name        VARCHAR(200) NOT NULL,
    quantity    BIGINT       NOT NULL CHECK (quantity > 0),
    unit_amount BIGINT       NOT NULL,
    line_amount BIGINT       NOT NULL,
    KEY order_lines_order (order_id, id),
    CONSTRAINT order_lines_order_fk FOREIGN KEY (order_id) REFERENCES orders (id),
    CONSTRAINT order_lines_product_fk FOREIGN KEY (product_id) REFERENCES products (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

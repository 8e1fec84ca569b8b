-- Subscription plans: a price per month or per year. Codes compare exactly.
CREATE TABLE plans (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code         VARCHAR(64) NOT NULL,
    name         VARCHAR(200) NOT NULL,
    price_amount BIGINT NOT NULL CHECK (price_amount >= 0),
    currency     VARCHAR(3) NOT NULL,
    billing_interval VARCHAR(8) NOT NULL CHECK (billing_interval IN ('month', 'year')),
    created_at   BIGINT NOT NULL,
    CONSTRAINT plans_code_key UNIQUE (code)
);

-- The payments ledger: one payment per order; only the card's last four digits.
CREATE TABLE payments (
    id               VARCHAR(36) PRIMARY KEY,
    order_id         VARCHAR(128) NOT NULL UNIQUE,
    user_id          VARCHAR(128) NOT NULL,
    amount_cents     BIGINT NOT NULL CHECK (amount_cents > 0),
    currency         CHAR(3) NOT NULL,
    status           VARCHAR(16) NOT NULL,
    refunded_cents   BIGINT NOT NULL DEFAULT 0 CHECK (refunded_cents >= 0 AND refunded_cents <= amount_cents),
    card_last4       CHAR(4) NOT NULL,
    decline_reason   VARCHAR(64) NULL,
    provider_ref     VARCHAR(128) NULL,
    idempotency_key  VARCHAR(255) NOT NULL,
    created_at       VARCHAR(40) NOT NULL,
    updated_at       VARCHAR(40) NOT NULL
) ENGINE = InnoDB;

-- Idempotency keys of capture, void and refund calls: a key is used once per payment.
CREATE TABLE operations (
    payment_id       VARCHAR(36) NOT NULL,
    idempotency_key  VARCHAR(255) NOT NULL,
    kind             VARCHAR(16) NOT NULL,
    amount_cents     BIGINT NOT NULL,
    created_at       VARCHAR(40) NOT NULL,
    PRIMARY KEY (payment_id, idempotency_key),
    FOREIGN KEY (payment_id) REFERENCES payments (id)
) ENGINE = InnoDB;

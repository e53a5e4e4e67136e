-- The payments ledger: one payment per order; only the card's last four digits.
CREATE TABLE payments (
    id               TEXT PRIMARY KEY,
    order_id         TEXT NOT NULL UNIQUE,
    user_id          TEXT NOT NULL,
    amount_cents     INTEGER NOT NULL CHECK (amount_cents > 0),
    currency         TEXT NOT NULL CHECK (length(currency) = 3),
    status           TEXT NOT NULL,
    refunded_cents   INTEGER NOT NULL DEFAULT 0 CHECK (refunded_cents >= 0 AND refunded_cents <= amount_cents),
    card_last4       TEXT NOT NULL,
    decline_reason   TEXT,
    provider_ref     TEXT,
    idempotency_key  TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

-- Idempotency keys of capture, void and refund calls: a key is used once per payment.
CREATE TABLE operations (
    payment_id       TEXT NOT NULL REFERENCES payments (id),
    idempotency_key  TEXT NOT NULL,
    kind             TEXT NOT NULL,
    amount_cents     INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (payment_id, idempotency_key)
);

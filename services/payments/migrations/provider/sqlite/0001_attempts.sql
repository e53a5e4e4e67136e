-- The simulated card processor's own records, in its own database (never the ledger's):
-- what a real provider keeps on its side of the wire.

-- One authorization attempt per idempotency key (the payment's id): asking again with
-- the key returns this row's answer instead of placing a second hold.
CREATE TABLE sim_authorizations (
    idempotency_key  TEXT PRIMARY KEY,
    outcome          TEXT NOT NULL CHECK (outcome IN ('approved', 'declined')),
    reference        TEXT UNIQUE,
    decline_reason   TEXT,
    amount_cents     INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    card_last4       TEXT NOT NULL,
    state            TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

-- Captures, voids and refunds, once per (hold, idempotency key).
CREATE TABLE sim_operations (
    reference        TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    kind             TEXT NOT NULL,
    amount_cents     INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (reference, idempotency_key)
);

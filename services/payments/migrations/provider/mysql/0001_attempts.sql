-- The simulated card processor's own records, in its own database (never the ledger's):
-- what a real provider keeps on its side of the wire.

-- One authorization attempt per idempotency key (the payment's id): asking again with
-- the key returns this row's answer instead of placing a second hold.
CREATE TABLE sim_authorizations (
    idempotency_key  VARCHAR(255) PRIMARY KEY,
    outcome          VARCHAR(16) NOT NULL CHECK (outcome IN ('approved', 'declined')),
    reference        VARCHAR(128) NULL UNIQUE,
    decline_reason   VARCHAR(64) NULL,
    amount_cents     BIGINT NOT NULL,
    currency         CHAR(3) NOT NULL,
    card_last4       CHAR(4) NOT NULL,
    state            VARCHAR(16) NOT NULL,
    created_at       VARCHAR(40) NOT NULL,
    updated_at       VARCHAR(40) NOT NULL
) ENGINE = InnoDB;

-- Captures, voids and refunds, once per (hold, idempotency key).
CREATE TABLE sim_operations (
    reference        VARCHAR(128) NOT NULL,
    idempotency_key  VARCHAR(255) NOT NULL,
    kind             VARCHAR(16) NOT NULL,
    amount_cents     BIGINT NOT NULL,
    created_at       VARCHAR(40) NOT NULL,
    PRIMARY KEY (reference, idempotency_key)
) ENGINE = InnoDB;

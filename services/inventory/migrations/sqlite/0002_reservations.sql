-- Sold units, and stock held for orders in flight (one reservation per order).
ALTER TABLE products ADD COLUMN sold INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0);

CREATE TABLE reservations (
    order_id    TEXT PRIMARY KEY,
    status      TEXT NOT NULL CHECK (status IN ('reserved', 'committed', 'released', 'expired')),
    -- Unix milliseconds after which a held reservation expires.
    expires_at  INTEGER NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX reservations_due ON reservations (expires_at) WHERE status = 'reserved';

CREATE TABLE reservation_lines (
    order_id  TEXT NOT NULL REFERENCES reservations (order_id),
    sku       TEXT NOT NULL,
    quantity  INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);

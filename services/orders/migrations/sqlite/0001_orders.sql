-- Orders as JSON documents; the columns outside `doc` are what the queries filter on.
CREATE TABLE orders (
    id         TEXT    PRIMARY KEY,
    user_id    TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    doc        TEXT    NOT NULL CHECK (json_valid(doc)),
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
-- The caller's orders, newest first (ids are UUIDv7, so time-ordered).
CREATE INDEX orders_by_user ON orders (user_id, id);

-- The order saga's state, saved after every transition in the same transaction as the
-- order's change and its outbox events.
CREATE TABLE sagas (
    id         TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    state      TEXT    NOT NULL CHECK (json_valid(state)),
    updated_ms INTEGER NOT NULL
);
CREATE INDEX sagas_by_status ON sagas (status);

-- The first answer to each Idempotency-Key, per user.
CREATE TABLE idempotency_keys (
    user_id      TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_ms);

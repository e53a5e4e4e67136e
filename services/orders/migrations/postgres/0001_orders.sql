-- Orders as JSONB documents; the columns outside `doc` are what the queries filter on.
CREATE TABLE orders (
    id         TEXT   PRIMARY KEY,
    user_id    TEXT   NOT NULL,
    status     TEXT   NOT NULL,
    doc        JSONB  NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
-- The caller's orders, newest first (ids are UUIDv7, so time-ordered).
CREATE INDEX orders_by_user ON orders (user_id, id);

-- The order saga's state, saved after every transition in the same transaction as the
-- order's change and its outbox events.
CREATE TABLE sagas (
    id         TEXT   PRIMARY KEY,
    kind       TEXT   NOT NULL,
    status     TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    state      JSONB  NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX sagas_by_status ON sagas (status);

-- The first answer to each Idempotency-Key, per user.
CREATE TABLE idempotency_keys (
    user_id      TEXT   NOT NULL,
    key          TEXT   NOT NULL,
    request_hash TEXT   NOT NULL,
    status       BIGINT NOT NULL,
    body         TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_ms);

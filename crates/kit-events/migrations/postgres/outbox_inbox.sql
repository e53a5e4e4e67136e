-- Transactional outbox: events written in the same transaction as the state change
-- they describe, published later by the relay. `position` keeps publish order.
CREATE TABLE IF NOT EXISTS outbox (
    position        BIGSERIAL PRIMARY KEY,
    event_id        TEXT      NOT NULL UNIQUE,
    subject         TEXT      NOT NULL,
    payload         TEXT      NOT NULL,
    created_ms      BIGINT    NOT NULL,
    sent_ms         BIGINT,
    attempts        BIGINT    NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT    NOT NULL DEFAULT 0,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (sent_ms, position);

-- Idempotent inbox: the events a consumer has handled, written in the same
-- transaction as the handling's effect.
CREATE TABLE IF NOT EXISTS inbox (
    consumer   TEXT   NOT NULL,
    event_id   TEXT   NOT NULL,
    handled_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

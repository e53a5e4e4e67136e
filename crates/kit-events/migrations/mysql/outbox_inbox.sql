-- Transactional outbox: events written in the same transaction as the state change
-- they describe, published later by the relay. `position` keeps publish order.
CREATE TABLE IF NOT EXISTS outbox (
    position        BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_id        VARCHAR(64)  NOT NULL UNIQUE,
    subject         VARCHAR(255) NOT NULL,
    payload         LONGTEXT     NOT NULL,
    created_ms      BIGINT       NOT NULL,
    sent_ms         BIGINT       NULL,
    attempts        BIGINT       NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT       NOT NULL DEFAULT 0,
    last_error      TEXT         NULL,
    INDEX outbox_unsent (sent_ms, position)
) ENGINE = InnoDB;

-- Idempotent inbox: the events a consumer has handled, written in the same
-- transaction as the handling's effect.
CREATE TABLE IF NOT EXISTS inbox (
    consumer   VARCHAR(128) NOT NULL,
    event_id   VARCHAR(64)  NOT NULL,
    handled_ms BIGINT       NOT NULL,
    PRIMARY KEY (consumer, event_id)
) ENGINE = InnoDB;

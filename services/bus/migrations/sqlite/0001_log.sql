-- The append-only log: one row per published event, in publish order.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    subject      TEXT    NOT NULL,
    msg_id       TEXT    NOT NULL UNIQUE,
    payload      TEXT    NOT NULL,
    published_ms INTEGER NOT NULL
);
CREATE INDEX events_subject ON events (subject, seq);
CREATE INDEX events_published ON events (published_ms);

-- Durable consumer groups: `cursor` is the last log position handed out or skipped.
CREATE TABLE groups (
    name           TEXT    PRIMARY KEY,
    subjects       TEXT    NOT NULL,
    cursor         INTEGER NOT NULL,
    ack_timeout_ms INTEGER NOT NULL,
    max_deliveries INTEGER NOT NULL,
    created_ms     INTEGER NOT NULL
);

-- Deliveries not yet acknowledged: leased to a consumer until `leased_until_ms`, or
-- waiting for `deliver_after_ms` after a nack or an expired lease.
CREATE TABLE pending (
    grp              TEXT    NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    seq              INTEGER NOT NULL,
    deliveries       INTEGER NOT NULL,
    consumer         TEXT,
    leased_until_ms  INTEGER NOT NULL,
    deliver_after_ms INTEGER NOT NULL,
    PRIMARY KEY (grp, seq)
);
CREATE INDEX pending_consumer ON pending (grp, consumer);

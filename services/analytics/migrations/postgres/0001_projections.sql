-- Which replay the projections come from: `flotilla analytics rebuild` drops them and
-- bumps the generation, and the consumers follow a new group `analytics-g<generation>`
-- that reads the stream from the beginning.
CREATE TABLE projection_state (
    id         INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    generation BIGINT  NOT NULL,
    rebuilt_at TEXT
);
INSERT INTO projection_state (id, generation) VALUES (1, 1);

-- Counters per minute bucket (minutes since the epoch, of the event's own time, so a
-- replay lands every event in the same bucket again).
CREATE TABLE counters (
    bucket BIGINT NOT NULL,
    metric TEXT   NOT NULL,
    value  BIGINT NOT NULL,
    PRIMARY KEY (bucket, metric)
);

-- Units sold (confirmed orders) per product and minute bucket.
CREATE TABLE product_sales (
    bucket   BIGINT NOT NULL,
    sku      TEXT   NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (bucket, sku)
);

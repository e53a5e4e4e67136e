-- Spans as received. Ids are lowercase hex; times Unix nanoseconds; kind and status the
-- OTLP enum numbers; attributes a JSON object, events a JSON array.
CREATE TABLE spans (
    trace_id       TEXT    NOT NULL,
    span_id        TEXT    NOT NULL,
    parent_span_id TEXT,
    service        TEXT    NOT NULL,
    instance       TEXT,
    name           TEXT    NOT NULL,
    kind           INTEGER NOT NULL,
    start_ns       INTEGER NOT NULL,
    end_ns         INTEGER NOT NULL,
    status         INTEGER NOT NULL,
    status_message TEXT,
    attributes     TEXT    NOT NULL,
    events         TEXT    NOT NULL
);
-- One row per span (an exporter's retry is not a second span); a trace's spans.
CREATE UNIQUE INDEX spans_by_trace ON spans (trace_id, span_id);

-- One row per trace, kept up to date as its spans arrive: what the traces list shows
-- and filters on without reading the spans. The root is the span without a parent once
-- one arrived (has_root = 1), else the earliest span so far.
CREATE TABLE traces (
    trace_id     TEXT    PRIMARY KEY,
    start_ns     INTEGER NOT NULL,
    end_ns       INTEGER NOT NULL,
    span_count   INTEGER NOT NULL,
    error        INTEGER NOT NULL,
    has_root     INTEGER NOT NULL,
    root_service TEXT    NOT NULL,
    root_name    TEXT    NOT NULL,
    route        TEXT
) WITHOUT ROWID;
CREATE INDEX traces_by_start ON traces (start_ns);

-- The services a trace went through (the `service` filter, the list's services).
CREATE TABLE trace_services (
    service  TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    PRIMARY KEY (service, trace_id)
) WITHOUT ROWID;
CREATE INDEX trace_services_by_trace ON trace_services (trace_id);

-- Log records in arrival order (ids only grow, so `after_id` follows them).
CREATE TABLE logs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ns       INTEGER NOT NULL,
    service       TEXT    NOT NULL,
    instance      TEXT,
    severity      INTEGER NOT NULL,
    severity_text TEXT,
    message       TEXT    NOT NULL,
    trace_id      TEXT,
    span_id       TEXT,
    attributes    TEXT    NOT NULL
);
CREATE INDEX logs_by_time ON logs (time_ns);
CREATE INDEX logs_by_service ON logs (service, id);
CREATE INDEX logs_by_span ON logs (trace_id, span_id) WHERE trace_id IS NOT NULL;

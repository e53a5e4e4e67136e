-- The reconciliation sweeper looks for pending claims older than its stale age.
CREATE INDEX payments_status_created ON payments (status, created_at);

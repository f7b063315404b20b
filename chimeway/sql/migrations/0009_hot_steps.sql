-- Cheaper steps (the performance issue): a delivery's claim and record, and a run's move to
-- its next step, update rows without touching any index (HOT updates, on pages with room),
-- so a step writes a heap tuple where it used to write one entry per index as well.
--
-- * Indexes whose key or predicate holds a column a step changes (status, status_changed_at,
--   retry_at, provider_message_id, current_step_id) go, replaced where a sweep needs one by
--   an index on columns a send does not change: an open delivery is one not yet terminal
--   (terminal_at IS NULL, set once, at the end), found by when it was created.
-- * Indexes that only backed foreign keys to immutable parents (definitions and their steps
--   are never deleted) go.
-- * Feedback finds a delivery by its provider message id through its attempts, which keep it.

DROP INDEX chimeway_deliveries_in_flight_idx;
DROP INDEX chimeway_deliveries_retry_due_idx;
DROP INDEX chimeway_deliveries_deferred_due_idx;
DROP INDEX chimeway_deliveries_provider_message_idx;
DROP INDEX chimeway_deliveries_step_idx;
DROP INDEX chimeway_workflow_runs_step_idx;
DROP INDEX chimeway_workflow_runs_definition_idx;

-- Sweeps: open deliveries by age, and deferred ones by when they become eligible (only a
-- deferral's end changes orchestration_state, not a send).
CREATE INDEX chimeway_deliveries_open_idx ON chimeway_deliveries (created_at)
    WHERE terminal_at IS NULL;
CREATE INDEX chimeway_deliveries_deferred_idx ON chimeway_deliveries (next_eligible_at)
    WHERE orchestration_state = 'deferred';

-- Room on each page for the new versions of its rows.
ALTER TABLE chimeway_deliveries SET (fillfactor = 50);
ALTER TABLE chimeway_workflow_runs SET (fillfactor = 50);

-- The metrics read recent attempts by time: a block range index costs an attempt almost
-- nothing (attempts are appended in time order).
DROP INDEX chimeway_delivery_attempts_finished_idx;
CREATE INDEX chimeway_delivery_attempts_finished_brin ON chimeway_delivery_attempts
    USING brin (finished_at);

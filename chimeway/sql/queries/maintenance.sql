-- The periodic sweep (chimeway/maintenance.py): work whose job was lost, found from the rows.

-- name: deliveries_deferred_due_resume
-- Deferred deliveries whose time has come become ready (history row included).
WITH due AS (
    SELECT id FROM chimeway_deliveries
    WHERE status = 'pending' AND orchestration_state = 'deferred' AND next_eligible_at <= now()
    ORDER BY next_eligible_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), resumed AS (
    UPDATE chimeway_deliveries d
    SET orchestration_state = 'ready', updated_at = now()
    FROM due WHERE d.id = due.id
    RETURNING d.id
), history AS (
    INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason)
    SELECT id, 'pending', 'pending', 'resumed_from_deferral' FROM resumed
)
SELECT id FROM resumed

-- name: runs_to_arm
-- Waits due within the horizon whose timer job is not queued yet (Procrastinate's unique
-- index on todo queueing locks makes the NOT EXISTS an index probe).
SELECT r.id, r.suspended_until FROM chimeway_workflow_runs r
WHERE r.state = 'waiting' AND r.suspended_until <= now() + %(horizon)s::interval
  AND NOT EXISTS (
      SELECT 1 FROM procrastinate_jobs j
      WHERE j.queueing_lock = 'chimeway:progress:' || r.id::text AND j.status = 'todo'
  )
ORDER BY r.suspended_until
LIMIT %(limit)s

-- name: deliveries_stuck_list
-- Ready deliveries that have waited too long for a send (and are in no queued chunk job: a
-- backlog is not a lost job), failed ones whose retry is overdue, and dispatched ones whose
-- worker went silent: each needs a deliver job again. The queued chunks' ids are listed once
-- and hashed (a probe into every job's arguments per delivery took 18 s for 500 deliveries
-- behind 10,000 queued chunks); with no stuck delivery they are not read at all.
WITH queued AS MATERIALIZED (
    SELECT x.id::uuid AS id
    FROM procrastinate_jobs j
    CROSS JOIN LATERAL jsonb_array_elements_text(j.args -> 'delivery_ids') AS x (id)
    WHERE j.task_name = 'chimeway:deliver_many' AND j.status = 'todo'
)
SELECT id FROM chimeway_deliveries d
WHERE status = 'pending' AND orchestration_state = 'ready'
  AND status_changed_at < now() - %(pending_after)s::interval
  AND NOT EXISTS (SELECT 1 FROM queued q WHERE q.id = d.id)
UNION ALL
SELECT id FROM chimeway_deliveries
WHERE status = 'dispatched' AND status_changed_at < now() - %(dispatched_after)s::interval
UNION ALL
SELECT id FROM chimeway_deliveries
WHERE status = 'failed' AND retry_at < now() - %(pending_after)s::interval
LIMIT %(limit)s

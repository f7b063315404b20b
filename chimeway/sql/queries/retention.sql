-- Retention: what the periodic prune removes (chimeway/store/retention.py). Each kind has a
-- count (for `chimeway prune --dry-run`) and a delete of one batch with the same rule. A
-- batch locks the rows it removes with SKIP LOCKED: a row another transaction holds is left
-- for a later batch, so pruning never makes a worker wait. `older_than` is an interval.

-- name: retention_jobs_count
-- Finished Procrastinate jobs with no event newer than `older_than`, and their events.
SELECT count(*) AS jobs,
       coalesce(sum((SELECT count(*) FROM procrastinate_events e WHERE e.job_id = j.id)), 0)
           AS events
FROM procrastinate_jobs j
WHERE j.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
  AND NOT EXISTS (
      SELECT 1 FROM procrastinate_events e
      WHERE e.job_id = j.id AND e.at >= now() - %(older_than)s::interval
  )

-- name: retention_jobs_delete
-- A batch of those jobs with their events (deleted here to be counted; the foreign key would
-- cascade to them anyway). Deleting a job unlinks its periodic-defer row (Procrastinate's
-- trigger).
WITH doomed AS (
    SELECT j.id FROM procrastinate_jobs j
    WHERE j.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
      AND NOT EXISTS (
          SELECT 1 FROM procrastinate_events e
          WHERE e.job_id = j.id AND e.at >= now() - %(older_than)s::interval
      )
    ORDER BY j.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), events AS (
    DELETE FROM procrastinate_events e USING doomed WHERE e.job_id = doomed.id RETURNING 1
), jobs AS (
    DELETE FROM procrastinate_jobs j USING doomed WHERE j.id = doomed.id RETURNING 1
)
SELECT (SELECT count(*) FROM jobs) AS jobs, (SELECT count(*) FROM events) AS events

-- name: retention_periodic_defers_count
-- Procrastinate keeps the latest defer of each periodic task; rows deferred longer ago than
-- `older_than` belong to tasks no longer scheduled (its deferrer never looks back more than
-- minutes, so an old row is never deferred again).
SELECT count(*) FROM procrastinate_periodic_defers
WHERE defer_timestamp < extract(epoch FROM now() - %(older_than)s::interval)

-- name: retention_periodic_defers_delete
WITH doomed AS (
    SELECT id FROM procrastinate_periodic_defers
    WHERE defer_timestamp < extract(epoch FROM now() - %(older_than)s::interval)
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM procrastinate_periodic_defers p USING doomed WHERE p.id = doomed.id

-- name: retention_events_count
-- Events older than `older_than` whose deliveries are all terminal (`terminal`) and whose
-- runs are all finished (not `live_runs`), none of them changed within `older_than`.
SELECT count(*) FROM chimeway_events e
WHERE e.created_at < now() - %(older_than)s::interval
  AND NOT EXISTS (
      SELECT 1 FROM chimeway_notifications n
      JOIN chimeway_deliveries d ON d.notification_id = n.id
      WHERE n.event_id = e.id
        AND (d.status <> ALL(%(terminal)s::chimeway_delivery_status[])
             OR d.updated_at >= now() - %(older_than)s::interval)
  )
  AND NOT EXISTS (
      SELECT 1 FROM chimeway_notifications n
      JOIN chimeway_workflow_runs r ON r.notification_id = n.id
      WHERE n.event_id = e.id
        AND (r.state = ANY(%(live_runs)s::chimeway_run_state[])
             OR r.last_transition_at >= now() - %(older_than)s::interval)
  )

-- name: retention_events_lock
-- A batch of those events, oldest first, locked (skipping those another transaction holds),
-- with their deliveries and runs locked too: a writer adding history to one of them
-- (a feedback transition) holds or takes that row's lock first, so once this returns,
-- retention_events_delete, a statement of its own in the same transaction, sees every child
-- row there is and none can be added until the batch commits.
WITH doomed AS (
    SELECT e.id FROM chimeway_events e
    WHERE e.created_at < now() - %(older_than)s::interval
      AND NOT EXISTS (
          SELECT 1 FROM chimeway_notifications n
          JOIN chimeway_deliveries d ON d.notification_id = n.id
          WHERE n.event_id = e.id
            AND (d.status <> ALL(%(terminal)s::chimeway_delivery_status[])
                 OR d.updated_at >= now() - %(older_than)s::interval)
      )
      AND NOT EXISTS (
          SELECT 1 FROM chimeway_notifications n
          JOIN chimeway_workflow_runs r ON r.notification_id = n.id
          WHERE n.event_id = e.id
            AND (r.state = ANY(%(live_runs)s::chimeway_run_state[])
                 OR r.last_transition_at >= now() - %(older_than)s::interval)
      )
    ORDER BY e.created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), notifications AS (
    SELECT n.id FROM chimeway_notifications n WHERE n.event_id IN (SELECT id FROM doomed)
), runs AS MATERIALIZED (
    SELECT r.id FROM chimeway_workflow_runs r
    WHERE r.notification_id IN (SELECT id FROM notifications)
    ORDER BY r.id FOR UPDATE
), deliveries AS MATERIALIZED (
    -- Lock order: runs, then deliveries (the runs are all locked before the first delivery).
    SELECT d.id FROM chimeway_deliveries d
    WHERE d.notification_id IN (SELECT id FROM notifications)
      AND (SELECT count(*) FROM runs) >= 0
    ORDER BY d.id FOR UPDATE
)
SELECT d.id FROM doomed d WHERE (SELECT count(*) FROM deliveries) >= 0

-- name: retention_events_delete
-- The events `ids` (locked by retention_events_lock) with everything under them, children
-- first: there are no foreign keys between these rows (migration 0018) to cascade.
-- Deleting a delivery still clears its digest membership and the references of digests and
-- webhook ingress to it (their keys stay); deleting a run takes its digests.
WITH notifications AS (
    SELECT n.id FROM chimeway_notifications n WHERE n.event_id = ANY(%(ids)s::uuid[])
), runs AS (
    SELECT r.id FROM chimeway_workflow_runs r
    WHERE r.notification_id IN (SELECT id FROM notifications)
), deliveries AS (
    SELECT d.id FROM chimeway_deliveries d
    WHERE d.notification_id IN (SELECT id FROM notifications)
    UNION
    SELECT d.id FROM chimeway_deliveries d WHERE d.workflow_run_id IN (SELECT id FROM runs)
), attempts AS (
    DELETE FROM chimeway_delivery_attempts a USING deliveries d WHERE a.delivery_id = d.id
), delivery_history AS (
    DELETE FROM chimeway_delivery_transitions t USING deliveries d WHERE t.delivery_id = d.id
), gone_deliveries AS (
    DELETE FROM chimeway_deliveries x USING deliveries d WHERE x.id = d.id
), run_history AS (
    DELETE FROM chimeway_workflow_transitions t USING runs r WHERE t.run_id = r.id
), gone_runs AS (
    DELETE FROM chimeway_workflow_runs x USING runs r WHERE x.id = r.id
), gone_notifications AS (
    DELETE FROM chimeway_notifications x USING notifications n WHERE x.id = n.id
)
DELETE FROM chimeway_events e WHERE e.id = ANY(%(ids)s::uuid[])

-- name: retention_signals_count
-- Signals routed longer ago than `older_than` (unrouted ones wait for their job).
SELECT count(*) FROM chimeway_signals WHERE routed_at < now() - %(older_than)s::interval

-- name: retention_signals_delete
WITH doomed AS (
    SELECT id FROM chimeway_signals
    WHERE routed_at < now() - %(older_than)s::interval
    ORDER BY routed_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM chimeway_signals s USING doomed WHERE s.id = doomed.id

-- name: retention_webhooks_count
-- Provider webhook events received longer ago than `older_than` and no longer queued.
SELECT count(*) FROM chimeway_webhook_ingress
WHERE ingress_state <> 'queued' AND created_at < now() - %(older_than)s::interval

-- name: retention_webhooks_delete
WITH doomed AS (
    SELECT id FROM chimeway_webhook_ingress
    WHERE ingress_state <> 'queued' AND created_at < now() - %(older_than)s::interval
    ORDER BY created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM chimeway_webhook_ingress w USING doomed WHERE w.id = doomed.id

-- name: retention_processes_count
-- Processes silent for longer than `older_than` (the rule of `processes_prune`).
SELECT count(*) FROM chimeway_processes WHERE beat_at < now() - %(older_than)s::interval

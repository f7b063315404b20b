-- Deliveries, their status history and their attempts (chimeway/store/deliveries.py).

-- name: delivery_insert_batch
-- One row per (notification, channel) or per workflow step; each gets its `planned` history.
-- A NULL render_data takes the content the notification rendered for the channel at trigger
-- time (a workflow's later steps).
WITH planned AS (
    INSERT INTO chimeway_deliveries (
        notification_id, tenant_id, recipient_id, channel, render_data, max_attempts,
        workflow_run_id, workflow_step_id
    )
    SELECT x.notification_id, x.tenant_id, x.recipient_id, x.channel,
           coalesce(
               x.render_data,
               (SELECT n.contents -> x.channel FROM chimeway_notifications n
                WHERE n.id = x.notification_id),
               '{}'::jsonb
           ),
           x.max_attempts, x.run_id, x.step_id
    FROM unnest(
        %(notification_ids)s::uuid[], %(tenant_ids)s::text[], %(recipient_ids)s::text[],
        %(channels)s::text[], %(render_data)b::jsonb[], %(max_attempts)s::int[],
        %(run_ids)s::uuid[], %(step_ids)s::uuid[]
    ) AS x (notification_id, tenant_id, recipient_id, channel, render_data, max_attempts,
            run_id, step_id)
    ON CONFLICT DO NOTHING
    RETURNING id, notification_id, channel, workflow_run_id
), history AS (
    INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason)
    SELECT id, NULL, 'pending', 'planned' FROM planned
)
SELECT id, notification_id, channel, workflow_run_id FROM planned

-- name: delivery_get
SELECT * FROM chimeway_deliveries WHERE id = %(id)s

-- name: delivery_get_for_tenant
SELECT * FROM chimeway_deliveries WHERE id = %(id)s AND tenant_id = %(tenant_id)s

-- name: delivery_lock
-- Locked in id order: two transactions locking overlapping sets cannot deadlock on them.
SELECT * FROM chimeway_deliveries WHERE id = ANY(%(ids)s::uuid[]) ORDER BY id FOR UPDATE

-- name: step_delivery_lock
-- The active step's delivery, locked after the run (lock order: run, then delivery).
SELECT * FROM chimeway_deliveries
WHERE workflow_run_id = %(run_id)s AND workflow_step_id = %(step_id)s
FOR UPDATE

-- name: delivery_transition
-- The one guarded move, for any number of deliveries: each only along an allowed edge (the
-- pairs edge_from[i] -> edge_to[i]), with its history row in the same statement. Moved rows
-- come back in input order; a delivery whose status does not allow its move is left out.
WITH m AS (
    SELECT * FROM unnest(
        %(ids)s::uuid[], %(to_statuses)s::chimeway_delivery_status[],
        %(suppression_reasons)s::chimeway_delivery_reason[], %(retry_at)s::timestamptz[],
        %(provider_message_ids)s::text[], %(reasons)s::text[], %(contexts)b::jsonb[]
    ) WITH ORDINALITY AS m (
        id, to_status, suppression_reason, retry_at, provider_message_id, reason, context, n
    )
), previous AS (
    SELECT id, status FROM chimeway_deliveries
    WHERE id = ANY(%(ids)s::uuid[]) ORDER BY id FOR UPDATE
), moved AS (
    UPDATE chimeway_deliveries d
    SET status = m.to_status,
        suppression_reason = m.suppression_reason,
        retry_at = m.retry_at,
        provider_message_id = coalesce(m.provider_message_id, d.provider_message_id),
        updated_at = now(),
        status_changed_at = now(),
        terminal_at = CASE WHEN m.to_status = ANY(%(terminal)s::chimeway_delivery_status[])
                           THEN now() END
    FROM m JOIN previous p ON p.id = m.id
    WHERE d.id = ANY(%(ids)s::uuid[]) AND d.id = m.id
      AND EXISTS (
          SELECT 1 FROM unnest(%(edge_from)s::chimeway_delivery_status[],
                               %(edge_to)s::chimeway_delivery_status[]) AS e (f, t)
          WHERE e.f = p.status AND e.t = m.to_status
      )
    RETURNING d.*, p.status AS previous_status, m.n AS move_n, m.reason AS move_reason,
              m.context AS move_context
), history AS (
    INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason, context)
    SELECT id, previous_status, status, move_reason, move_context FROM moved ORDER BY move_n
)
SELECT * FROM moved ORDER BY move_n

-- name: delivery_claim
-- The claim, as one statement (run in autocommit) for any number of deliveries: lock them
-- (in id order) and move each that may be sent now to `dispatched`, with its history row.
-- Sendable: ready, and pending, or failed with its retry due, or dispatched by a worker gone
-- silent for `stuck_after`. Each row as it was comes back either way (`was_*`), with the
-- moved row's columns when it moved, on the database's clock; a missing id, no row.
WITH previous AS (
    SELECT d.id, d.status, d.orchestration_state, d.retry_at,
           d.status_changed_at + %(stuck_after)s::interval AS takeover_at,
           (SELECT count(*) FROM chimeway_delivery_attempts a WHERE a.delivery_id = d.id)
               AS attempts
    FROM chimeway_deliveries d
    WHERE d.id = ANY(%(ids)s::uuid[])
    ORDER BY d.id
    FOR UPDATE
), moved AS (
    UPDATE chimeway_deliveries d
    SET status = 'dispatched',
        suppression_reason = NULL,
        retry_at = NULL,
        updated_at = now(),
        status_changed_at = now(),
        terminal_at = NULL
    FROM previous p
    WHERE d.id = ANY(%(ids)s::uuid[]) AND d.id = p.id
      AND p.orchestration_state = 'ready'
      AND p.status = ANY(%(from_statuses)s::chimeway_delivery_status[])
      AND (p.status = 'pending'
           OR (p.status = 'failed' AND (p.retry_at IS NULL OR p.retry_at <= now()))
           OR (p.status = 'dispatched' AND p.takeover_at <= now()))
    RETURNING d.*
), history AS (
    INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason, context)
    SELECT m.id, p.status, m.status,
           CASE WHEN p.status = 'dispatched' THEN 'redispatched_after_interruption'
                ELSE 'dispatched' END,
           '{}'::jsonb
    FROM moved m JOIN previous p ON p.id = m.id
)
SELECT p.status AS was_status, p.orchestration_state AS was_orchestration_state,
       p.retry_at AS was_retry_at, p.takeover_at, now() AS db_now, p.attempts,
       p.id AS claimed_id, m.id IS NOT NULL AS moved, m.*
FROM previous p LEFT JOIN moved m ON m.id = p.id

-- name: delivery_transitions_list
SELECT id, from_status, to_status, reason, context, created_at
FROM chimeway_delivery_transitions
WHERE delivery_id = %(delivery_id)s
ORDER BY id

-- name: attempt_append
-- The next attempt of each delivery, numbered under its row lock (taken by the caller):
-- contiguous from 1. One row per delivery; rows come back in input order.
WITH appended AS (
    INSERT INTO chimeway_delivery_attempts (
        delivery_id, attempt_number, outcome, error_class, error, provider_message_id,
        provider_response, started_at
    )
    SELECT x.delivery_id,
           coalesce((SELECT max(a.attempt_number) FROM chimeway_delivery_attempts a
                     WHERE a.delivery_id = x.delivery_id), 0) + 1,
           x.outcome, x.error_class, x.error, x.provider_message_id, x.provider_response,
           x.started_at
    FROM unnest(
        %(delivery_ids)s::uuid[], %(outcomes)s::chimeway_attempt_outcome[],
        %(error_classes)s::chimeway_error_class[], %(errors)s::text[],
        %(provider_message_ids)s::text[], %(provider_responses)b::jsonb[],
        %(started_at)s::timestamptz[]
    ) AS x (delivery_id, outcome, error_class, error, provider_message_id, provider_response,
            started_at)
    RETURNING *
)
SELECT a.* FROM appended a
JOIN unnest(%(delivery_ids)s::uuid[]) WITH ORDINALITY AS o (delivery_id, n)
  ON o.delivery_id = a.delivery_id
ORDER BY o.n

-- name: attempts_list
SELECT * FROM chimeway_delivery_attempts WHERE delivery_id = %(delivery_id)s ORDER BY attempt_number

-- name: attempt_latest
SELECT outcome, error_class FROM chimeway_delivery_attempts
WHERE delivery_id = %(delivery_id)s
ORDER BY attempt_number DESC
LIMIT 1

-- name: delivery_explain_header
-- Tenant-scoped: another tenant's delivery yields no row, exactly like a missing one.
SELECT d.id, d.tenant_id, d.recipient_id, d.channel, d.status, d.suppression_reason,
       d.orchestration_state, d.next_eligible_at, d.planning_reason, d.retry_at,
       d.provider_message_id, d.max_attempts, d.workflow_run_id, d.created_at,
       d.status_changed_at, d.terminal_at,
       n.id AS notification_id, n.created_at AS notification_created_at,
       e.id AS event_id, e.notification_key, e.correlation_id, e.idempotency_key,
       e.created_at AS event_created_at, st.step_key
FROM chimeway_deliveries d
JOIN chimeway_notifications n ON n.id = d.notification_id
JOIN chimeway_events e ON e.id = n.event_id
LEFT JOIN chimeway_workflow_steps st ON st.id = d.workflow_step_id
WHERE d.id = %(id)s AND d.tenant_id = %(tenant_id)s

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

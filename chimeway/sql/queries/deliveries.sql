-- Deliveries, their status history and their attempts (chimeway/deliveries.py).

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
SELECT * FROM chimeway_deliveries WHERE id = %(id)s FOR UPDATE

-- name: delivery_transition
-- The one guarded move: only from an allowed status; the history row is written with it.
WITH previous AS (
    SELECT id, status FROM chimeway_deliveries WHERE id = %(id)s FOR UPDATE
), moved AS (
    UPDATE chimeway_deliveries d
    SET status = %(to_status)s,
        suppression_reason = %(suppression_reason)s,
        retry_at = %(retry_at)s,
        provider_message_id = coalesce(%(provider_message_id)s, d.provider_message_id),
        updated_at = now(),
        status_changed_at = now(),
        terminal_at = CASE WHEN %(terminal)s THEN now() END
    FROM previous
    WHERE d.id = previous.id
      AND d.status = ANY(%(from_statuses)s::chimeway_delivery_status[])
    RETURNING d.*, previous.status AS previous_status
), history AS (
    INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason, context)
    SELECT id, previous_status, status, %(reason)s, %(context)s FROM moved
)
SELECT * FROM moved

-- name: delivery_transitions_list
SELECT id, from_status, to_status, reason, context, created_at
FROM chimeway_delivery_transitions
WHERE delivery_id = %(delivery_id)s
ORDER BY id

-- name: attempt_append
-- Numbered under the delivery's row lock (taken by the caller): contiguous from 1.
INSERT INTO chimeway_delivery_attempts (
    delivery_id, attempt_number, outcome, error_class, error, provider_message_id,
    provider_response, started_at
)
SELECT %(delivery_id)s,
       coalesce(max(attempt_number), 0) + 1,
       %(outcome)s, %(error_class)s, %(error)s, %(provider_message_id)s,
       %(provider_response)s, %(started_at)s
FROM chimeway_delivery_attempts
WHERE delivery_id = %(delivery_id)s
RETURNING *

-- name: attempts_list
SELECT * FROM chimeway_delivery_attempts WHERE delivery_id = %(delivery_id)s ORDER BY attempt_number


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

-- name: workflow_transitions_for_delivery
SELECT t.id, t.reason, t.from_state, t.to_state, t.context, t.created_at
FROM chimeway_workflow_transitions t
JOIN chimeway_workflow_runs r ON r.id = t.run_id
WHERE t.delivery_id = %(delivery_id)s AND r.tenant_id = %(tenant_id)s
ORDER BY t.id

-- name: delivery_claim
-- The claim, as one statement (run in autocommit): lock the delivery and, if it may be sent
-- now, make the guarded move to `dispatched` with its history row. Sendable: ready, and
-- pending, or failed with its retry due, or dispatched by a worker gone silent for
-- `stuck_after`. The row as it was comes back either way (`was_*`), with the moved row's
-- columns when it moved, on the database's clock.
WITH previous AS (
    SELECT d.id, d.status, d.orchestration_state, d.retry_at,
           d.status_changed_at + %(stuck_after)s::interval AS takeover_at,
           (SELECT count(*) FROM chimeway_delivery_attempts a WHERE a.delivery_id = d.id)
               AS attempts
    FROM chimeway_deliveries d
    WHERE d.id = %(id)s
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
    WHERE d.id = p.id
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
    FROM moved m CROSS JOIN previous p
)
SELECT p.status AS was_status, p.orchestration_state AS was_orchestration_state,
       p.retry_at AS was_retry_at, p.takeover_at, now() AS db_now, p.attempts,
       m.id IS NOT NULL AS moved, m.*
FROM previous p LEFT JOIN moved m ON true

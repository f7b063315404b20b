-- Deliveries, their status history and their attempts (chimeway/deliveries.py).

-- name: delivery_insert_batch
-- One row per (notification, channel) or per workflow step; each gets its `planned` history.
WITH planned AS (
    INSERT INTO chimeway_deliveries (
        notification_id, tenant_id, recipient_id, channel, render_data, max_attempts,
        workflow_run_id, workflow_step_id
    )
    SELECT * FROM unnest(
        %(notification_ids)s::uuid[], %(tenant_ids)s::text[], %(recipient_ids)s::text[],
        %(channels)s::text[], %(render_data)b::jsonb[], %(max_attempts)s::int[],
        %(run_ids)s::uuid[], %(step_ids)s::uuid[]
    )
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


-- name: delivery_claim_check
-- Locks the delivery; with the database's clock, says when a retry or a takeover is due.
SELECT status, orchestration_state, retry_at,
       status_changed_at + %(stuck_after)s::interval AS takeover_at, now() AS now,
       (SELECT count(*) FROM chimeway_delivery_attempts a WHERE a.delivery_id = d.id)
           AS attempts
FROM chimeway_deliveries d
WHERE id = %(id)s
FOR UPDATE

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

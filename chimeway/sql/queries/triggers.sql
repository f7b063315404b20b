-- A trigger that plans one delivery, written in one statement (chimeway/store/triggers.py).

-- name: trigger_write_one
-- The event, its notification, the run on its first step (when the notification has a
-- workflow: `run_id` not null) with `workflow_started` and `step_activated`, the delivery
-- with its `planned` history, and its deliver job (built as jobs_defer_per_id
-- builds it: Procrastinate's defer function, queueing lock <lock_prefix><delivery id>).
-- Each part is what event_insert, notification_insert_batch, run_insert_batch,
-- delivery_insert_batch and jobs_defer_per_id write for one row. A repeated idempotency
-- key (even a concurrent one) inserts nothing and returns no row.
WITH event AS (
    INSERT INTO chimeway_events (
        tenant_id, notification_key, notification_version, idempotency_key, correlation_id,
        payload
    )
    VALUES (
        %(tenant_id)s, %(notification_key)s, %(notification_version)s, %(idempotency_key)s,
        %(correlation_id)s, %(payload)s
    )
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
    RETURNING id
), notification AS (
    INSERT INTO chimeway_notifications (
        id, event_id, tenant_id, recipient_id, recipient_type, category, assigns, contents
    )
    SELECT %(notification_id)s, e.id, %(tenant_id)s, %(recipient_id)s, %(recipient_type)s, %(category)s,
           %(assigns)s, %(contents)s
    FROM event e
    RETURNING id
), run AS (
    INSERT INTO chimeway_workflow_runs (
        id, tenant_id, definition_id, notification_id, recipient_id, current_step_id, state,
        status_reason
    )
    SELECT %(run_id)s, %(tenant_id)s, %(definition_id)s, n.id, %(recipient_id)s, %(step_id)s,
           'active', 'workflow_started'
    FROM notification n
    WHERE %(run_id)s::uuid IS NOT NULL
    RETURNING id, current_step_id
), run_history AS (
    INSERT INTO chimeway_workflow_transitions (run_id, step_id, from_state, to_state, reason, context)
    SELECT id, current_step_id, NULL::chimeway_run_state, 'active'::chimeway_run_state,
           'workflow_started', '{}'::jsonb
    FROM run
    UNION ALL
    SELECT id, current_step_id, 'active'::chimeway_run_state, 'active'::chimeway_run_state,
           'step_activated', jsonb_build_object('step_key', %(step_key)s::text, 'source', 'trigger')
    FROM run
), delivery AS (
    INSERT INTO chimeway_deliveries (
        notification_id, tenant_id, recipient_id, channel, render_data, max_attempts,
        workflow_run_id, workflow_step_id
    )
    SELECT n.id, %(tenant_id)s, %(recipient_id)s, %(channel)s, %(render_data)s,
           %(max_attempts)s, %(run_id)s, %(step_id)s
    FROM notification n
    RETURNING id
), delivery_history AS (
    INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason)
    SELECT id, NULL, 'pending', 'planned' FROM delivery
)
SELECT e.id AS event_id, d.id AS delivery_id,
       procrastinate_defer_jobs_v1(ARRAY[
           ROW(%(queue)s, %(task)s, 0, NULL, %(lock_prefix)s || d.id::text,
               jsonb_build_object('delivery_id', d.id::text), NULL)::procrastinate_job_to_defer_v1
       ]) AS job_ids
FROM event e CROSS JOIN delivery d

-- A trigger that plans one delivery no policy can apply to, in one statement
-- (chimeway/store/triggers.py).

-- name: trigger_write_one
-- First the guard (`free`): no preference rule, quiet hours or cap can apply to the delivery
-- (chimeway_policy_applies, migrations 0010 and 0016) and, when its channel's adapter needs
-- an address (`needs`: 'email' or 'phone'), the recipient has it (given inline now, or in
-- the directory). When the guard fails the statement writes nothing and returns `free`
-- false: the caller plans through chimeway.engine.planning instead. Otherwise it writes
-- what event_insert, recipients_upsert_inline (when `profile`), notification_insert_batch,
-- run_insert_batch (when `definition_id` is not null), delivery_insert_batch (a delivery
-- policy let through: pending, ready, with its `planned` history) and its deliver job (as
-- jobs_defer_per_id: Procrastinate's own procrastinate_defer_jobs_v1, queueing lock
-- <lock_prefix><delivery id>) write for one row. A repeated idempotency key (even a
-- concurrent one) inserts nothing: `free` true and a NULL event_id.
WITH gate AS (
    SELECT NOT chimeway_policy_applies(
               %(tenant_id)s, %(recipient_id)s, %(channel)s, %(category)s, %(workflow_key)s)
           AND CASE %(needs)s::text
                   WHEN 'email' THEN %(email)s::text IS NOT NULL OR EXISTS (
                       SELECT 1 FROM chimeway_recipients rc
                       WHERE rc.tenant_id = %(tenant_id)s
                         AND rc.recipient_id = %(recipient_id)s
                         AND rc.email IS NOT NULL)
                   WHEN 'phone' THEN %(phone)s::text IS NOT NULL OR EXISTS (
                       SELECT 1 FROM chimeway_recipients rc
                       WHERE rc.tenant_id = %(tenant_id)s
                         AND rc.recipient_id = %(recipient_id)s
                         AND rc.phone IS NOT NULL)
                   ELSE %(needs)s::text IS NULL
               END AS free
), event AS (
    INSERT INTO chimeway_events (
        tenant_id, notification_key, notification_version, idempotency_key, correlation_id,
        payload, traceparent
    )
    SELECT %(tenant_id)s, %(notification_key)s, %(notification_version)s, %(idempotency_key)s,
           %(correlation_id)s, %(payload)s, %(traceparent)s
    FROM gate WHERE gate.free
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
    RETURNING id
), profile AS (
    INSERT INTO chimeway_recipients AS r (
        tenant_id, recipient_id, email, phone, locale, timezone, data
    )
    SELECT %(tenant_id)s, %(recipient_id)s, %(email)s, %(phone)s, %(locale)s, %(timezone)s,
           %(data)s
    FROM event WHERE %(profile)s
    ON CONFLICT (tenant_id, recipient_id) DO UPDATE SET
        email = coalesce(EXCLUDED.email, r.email),
        phone = coalesce(EXCLUDED.phone, r.phone),
        locale = coalesce(EXCLUDED.locale, r.locale),
        timezone = coalesce(EXCLUDED.timezone, r.timezone),
        data = r.data || EXCLUDED.data,
        updated_at = now()
    WHERE (r.email, r.phone, r.locale, r.timezone, r.data)
          IS DISTINCT FROM (coalesce(EXCLUDED.email, r.email), coalesce(EXCLUDED.phone, r.phone),
                            coalesce(EXCLUDED.locale, r.locale),
                            coalesce(EXCLUDED.timezone, r.timezone), r.data || EXCLUDED.data)
    RETURNING 1
), notification AS (
    INSERT INTO chimeway_notifications (
        event_id, tenant_id, recipient_id, recipient_type, category, assigns, contents
    )
    SELECT e.id, %(tenant_id)s, %(recipient_id)s, %(recipient_type)s, %(category)s,
           %(assigns)s, %(contents)s
    FROM event e
    RETURNING id
), run AS (
    INSERT INTO chimeway_workflow_runs (
        tenant_id, definition_id, notification_id, recipient_id, current_step_id, state,
        status_reason
    )
    SELECT %(tenant_id)s, %(definition_id)s, n.id, %(recipient_id)s, %(step_id)s, 'active',
           'workflow_started'
    FROM notification n
    WHERE %(definition_id)s::uuid IS NOT NULL
    RETURNING id, current_step_id
), run_history AS (
    INSERT INTO chimeway_workflow_transitions (run_id, step_id, from_state, to_state, reason, context)
    SELECT id, current_step_id, NULL::chimeway_run_state, 'active'::chimeway_run_state,
           'workflow_started', '{}'::jsonb
    FROM run
    UNION ALL
    SELECT id, current_step_id, 'active'::chimeway_run_state, 'active'::chimeway_run_state,
           'step_activated',
           jsonb_build_object('step_key', %(step_key)s::text, 'source', 'trigger')
    FROM run
), delivery AS (
    INSERT INTO chimeway_deliveries (
        notification_id, tenant_id, recipient_id, channel, render_data, max_attempts,
        workflow_run_id, workflow_step_id, status, orchestration_state, planning_context,
        category, workflow_key, critical, bypass_quiet_hours
    )
    SELECT n.id, %(tenant_id)s, %(recipient_id)s, %(channel)s, %(render_data)s,
           %(max_attempts)s, (SELECT id FROM run), %(step_id)s, 'pending', 'ready', '{}'::jsonb,
           %(category)s, %(workflow_key)s, %(critical)s, %(bypass_quiet_hours)s
    FROM notification n
    RETURNING id, workflow_run_id
), delivery_history AS (
    INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason, context)
    SELECT id, NULL::chimeway_delivery_status, 'pending'::chimeway_delivery_status, 'planned',
           '{}'::jsonb
    FROM delivery
), job AS (
    SELECT procrastinate_defer_jobs_v1(ARRAY[
               ROW(%(queue)s, %(task)s, 0, NULL, %(lock_prefix)s || d.id::text,
                   jsonb_build_object('delivery_id', d.id::text), NULL::timestamptz
               )::procrastinate_job_to_defer_v1
           ]) AS ids
    FROM delivery d
)
SELECT g.free, e.id AS event_id, n.id AS notification_id, d.id AS delivery_id,
       d.workflow_run_id AS run_id, (SELECT count(*) FROM job) AS jobs
FROM gate g
LEFT JOIN event e ON true
LEFT JOIN notification n ON true
LEFT JOIN delivery d ON true

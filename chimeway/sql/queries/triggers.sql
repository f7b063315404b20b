-- A trigger that plans one delivery no policy can apply to, in one statement
-- (chimeway/store/triggers.py, which says what each part mirrors).

-- name: trigger_write_one
-- `free`: no policy can apply (chimeway_policy_scope, inlined), and the address the channel
-- needs is there. Sent without its part `address` for a channel that needs none, without
-- `profile` for a recipient given without profile fields, and without `workflow` for a
-- notifier without one: their tables are neither read nor written then
-- (store/triggers.py).
WITH gate AS (
  SELECT NOT s.applies
    -- optional: address
    AND CASE %(needs)s::text WHEN 'email' THEN coalesce(%(email)s, rc.email)
    WHEN 'phone' THEN coalesce(%(phone)s, rc.phone)
    ELSE '' END IS NOT NULL
    -- end: address
    AS free
  FROM chimeway_policy_scope(%(tenant_id)s, %(recipient_id)s, %(channel)s, %(category)s,
    %(workflow_key)s) AS s
  -- optional: address
  LEFT JOIN chimeway_recipients rc
    ON rc.tenant_id = %(tenant_id)s AND rc.recipient_id = %(recipient_id)s
  -- end: address
), event AS (
  INSERT INTO chimeway_events (tenant_id, notification_key, notification_version,
    idempotency_key, correlation_id, payload, traceparent)
  SELECT %(tenant_id)s, %(notification_key)s, %(notification_version)s, %(idempotency_key)s,
    %(correlation_id)s, %(payload)s, %(traceparent)s
  FROM gate WHERE free
  ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
  RETURNING id
-- optional: profile
), profile AS (
  INSERT INTO chimeway_recipients AS r (tenant_id, recipient_id, email, phone, locale,
    timezone, data)
  SELECT %(tenant_id)s, %(recipient_id)s, %(email)s, %(phone)s, %(locale)s, %(timezone)s,
    %(data)s
  FROM event WHERE %(profile)s
  ON CONFLICT (tenant_id, recipient_id) DO UPDATE SET
    email = coalesce(EXCLUDED.email, r.email), phone = coalesce(EXCLUDED.phone, r.phone),
    locale = coalesce(EXCLUDED.locale, r.locale),
    timezone = coalesce(EXCLUDED.timezone, r.timezone), data = r.data || EXCLUDED.data,
    updated_at = now()
  WHERE (r.email, r.phone, r.locale, r.timezone, r.data)
    IS DISTINCT FROM (coalesce(EXCLUDED.email, r.email), coalesce(EXCLUDED.phone, r.phone),
    coalesce(EXCLUDED.locale, r.locale),
    coalesce(EXCLUDED.timezone, r.timezone), r.data || EXCLUDED.data)
-- end: profile
), notification AS (
  INSERT INTO chimeway_notifications (event_id, tenant_id, recipient_id, recipient_type,
    category, assigns, contents)
  SELECT id, %(tenant_id)s, %(recipient_id)s, %(recipient_type)s, %(category)s, %(assigns)s,
    %(contents)s
  FROM event
  RETURNING id
-- optional: workflow
), run AS (
  INSERT INTO chimeway_workflow_runs (tenant_id, definition_id, notification_id, recipient_id,
    current_step_id, state, status_reason)
  SELECT %(tenant_id)s, %(definition_id)s, id, %(recipient_id)s, %(step_id)s, 'active',
    'workflow_started'
  FROM notification WHERE %(definition_id)s::uuid IS NOT NULL
  RETURNING id, current_step_id
), run_history AS (
  INSERT INTO chimeway_workflow_transitions (run_id, step_id, from_state, to_state, reason,
    context)
  SELECT id, current_step_id, s.from_state::chimeway_run_state, 'active', s.reason, s.context
  FROM run, (VALUES (NULL, 'workflow_started', '{}'::jsonb),
    ('active', 'step_activated',
    jsonb_build_object('step_key', %(step_key)s::text, 'source', 'trigger'))
    ) AS s (from_state, reason, context)
-- end: workflow
), delivery AS (
  INSERT INTO chimeway_deliveries (notification_id, tenant_id, recipient_id, channel,
    render_data, max_attempts,
    -- optional: workflow
    workflow_run_id, workflow_step_id,
    -- end: workflow
    category, workflow_key, critical, bypass_quiet_hours)
  SELECT id, %(tenant_id)s, %(recipient_id)s, %(channel)s, %(render_data)s, %(max_attempts)s,
    -- optional: workflow
    (SELECT id FROM run), %(step_id)s,
    -- end: workflow
    %(category)s, %(workflow_key)s, %(critical)s, %(bypass_quiet_hours)s
  FROM notification
  RETURNING id, workflow_run_id
), delivery_history AS (
  INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason,
    context)
  SELECT id, NULL, 'pending', 'planned', '{}' FROM delivery
), job AS (
  SELECT procrastinate_defer_jobs_v1(ARRAY[
    ROW(%(queue)s, %(task)s, 0, NULL, %(lock_prefix)s || id::text,
    jsonb_build_object('delivery_id', id::text), NULL::timestamptz
    )::procrastinate_job_to_defer_v1]) AS ids
  FROM delivery
)
SELECT g.free, e.id AS event_id, n.id AS notification_id, d.id AS delivery_id,
   d.workflow_run_id AS run_id, (SELECT count(*) FROM job) AS jobs
FROM gate g LEFT JOIN event e ON true LEFT JOIN notification n ON true
LEFT JOIN delivery d ON true

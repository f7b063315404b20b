-- Bulk seeding for tests and benchmarks (chimeway/store/factories.py, chimeway.testing):
-- waiting runs built server-side with generate_series, with everything a run waiting after
-- its delivered first step has. Ids are deterministic: md5('<kind><i>')::uuid, kinds e
-- (event, one per 1,000 runs), n (notification), r (run), d (delivery). Every `stride`-th
-- run is due (10 minutes ago); the others fall due evenly over `spread` from a minute on.

-- name: seed_events
INSERT INTO chimeway_events (id, tenant_id, notification_key, notification_version,
    idempotency_key, created_at)
SELECT md5('e' || e)::uuid, %(tenant_id)s, %(notification_key)s, 1, 'seed-' || e,
       now() - interval '2 days'
FROM generate_series(0, (%(runs)s - 1) / 1000) e

-- name: seed_notifications
INSERT INTO chimeway_notifications (id, event_id, tenant_id, recipient_id, assigns, contents,
    created_at)
SELECT md5('n' || i)::uuid, md5('e' || (i / 1000))::uuid, %(tenant_id)s, 'u-' || i,
       jsonb_build_object('user', 'u-' || i), %(contents)s, now() - interval '2 days'
FROM generate_series(0, %(runs)s - 1) i

-- name: seed_runs_waiting
INSERT INTO chimeway_workflow_runs (id, tenant_id, definition_id, notification_id,
    recipient_id, current_step_id, state, status_reason, status_context, suspended_until,
    pending_signals, started_at, last_transition_at)
SELECT md5('r' || i)::uuid, %(tenant_id)s, %(definition_id)s, md5('n' || i)::uuid, 'u-' || i,
       %(step_id)s, 'waiting', 'waiting_for_step_progression',
       jsonb_build_object('rule_kind', 'wait_until', 'anchor', 'prior_delivery_terminal_at',
           'anchor_delivery_id', md5('d' || i)::uuid, 'anchor_delivery_status', 'succeeded',
           'anchor_timestamp', due - interval '1 day', 'due_at', due, 'to_step', %(to_step)s::text),
       due, %(signals)s::text[], due - interval '1 day', due - interval '1 day'
FROM (SELECT i, CASE WHEN i %% %(stride)s = 0
                     THEN now() - interval '10 minutes' + i * interval '10 us'
                     ELSE now() + interval '1 minute' + i * %(spread)s::interval / %(runs)s
                END AS due
      FROM generate_series(0, %(runs)s - 1) i) s

-- name: seed_deliveries_sent
INSERT INTO chimeway_deliveries (id, notification_id, tenant_id, recipient_id, channel, status,
    render_data, workflow_run_id, workflow_step_id, provider_message_id, created_at, updated_at,
    status_changed_at, terminal_at)
SELECT md5('d' || i)::uuid, md5('n' || i)::uuid, %(tenant_id)s, 'u-' || i, %(channel)s,
       'succeeded', %(render_data)s, md5('r' || i)::uuid, %(step_id)s, 'seed-' || i,
       now() - interval '1 day', now() - interval '1 day', now() - interval '1 day',
       now() - interval '1 day'
FROM generate_series(0, %(runs)s - 1) i

-- name: seed_delivery_transitions
INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason,
    created_at)
SELECT md5('d' || i)::uuid, v.f::chimeway_delivery_status, v.t::chimeway_delivery_status, v.r,
       now() - interval '1 day'
FROM generate_series(0, %(runs)s - 1) i,
     (VALUES (NULL, 'pending', 'planned'), ('pending', 'dispatched', 'dispatched'),
             ('dispatched', 'succeeded', 'sent')) AS v (f, t, r)

-- name: seed_attempts
INSERT INTO chimeway_delivery_attempts (delivery_id, attempt_number, outcome,
    provider_message_id, started_at, finished_at)
SELECT md5('d' || i)::uuid, 1, 'succeeded', 'seed-' || i, now() - interval '1 day',
       now() - interval '1 day'
FROM generate_series(0, %(runs)s - 1) i

-- name: seed_run_transitions
INSERT INTO chimeway_workflow_transitions (run_id, step_id, delivery_id, from_state, to_state,
    reason, context, created_at)
SELECT md5('r' || i)::uuid, %(step_id)s, CASE WHEN v.n = 3 THEN md5('d' || i)::uuid END,
       v.f::chimeway_run_state, v.t::chimeway_run_state, v.r,
       CASE v.n WHEN 2 THEN jsonb_build_object('step_key', %(step_key)s::text, 'source', 'trigger')
                WHEN 3 THEN jsonb_build_object('rule_kind', 'wait_until', 'to_step', %(to_step)s::text)
                ELSE '{}'::jsonb END,
       now() - interval '1 day'
FROM generate_series(0, %(runs)s - 1) i,
     (VALUES (1, NULL, 'active', 'workflow_started'), (2, 'active', 'active', 'step_activated'),
             (3, 'active', 'waiting', 'waiting_for_step_progression')) AS v (n, f, t, r)

-- name: seed_timer_jobs
-- A timer job for each wait not yet due that falls within the horizon, as Chimeway defers
-- it; due waits have none (their timers were lost: the sweep's work).
INSERT INTO procrastinate_jobs (queue_name, task_name, priority, queueing_lock, args,
    scheduled_at)
SELECT 'chimeway_progress', 'chimeway:progress', 1, 'chimeway:progress:' || r.id,
       jsonb_build_object('run_id', r.id::text), r.suspended_until
FROM generate_series(0, %(runs)s - 1) i
JOIN chimeway_workflow_runs r ON r.id = md5('r' || i)::uuid
WHERE i %% %(stride)s <> 0 AND r.suspended_until <= now() + %(horizon)s::interval

-- name: seed_orphans_count
-- Rows a seed left without their parent (0 when seeding kept every foreign key).
SELECT (SELECT count(*) FROM chimeway_workflow_runs r WHERE NOT EXISTS
            (SELECT 1 FROM chimeway_notifications n WHERE n.id = r.notification_id))
     + (SELECT count(*) FROM chimeway_deliveries d WHERE d.workflow_run_id IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM chimeway_workflow_runs r WHERE r.id = d.workflow_run_id))

-- name: seed_fast_on
-- While seeding rows that are consistent by construction: skip per-row foreign key checks
-- and Procrastinate's notify/event triggers (needs a superuser; no worker listens yet).
SET session_replication_role = replica

-- name: seed_fast_off
SET session_replication_role = origin

-- name: seed_analyze
VACUUM ANALYZE

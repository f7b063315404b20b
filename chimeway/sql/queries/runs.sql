-- Workflow runs and their transitions (chimeway/store/runs.py).

-- name: run_insert_batch
-- New runs start active on their first step, with `workflow_started` and `step_activated`.
WITH started AS (
    INSERT INTO chimeway_workflow_runs (
        tenant_id, definition_id, notification_id, recipient_id, current_step_id, state,
        status_reason
    )
    SELECT %(tenant_id)s, r.definition_id, r.notification_id, r.recipient_id, r.step_id,
           'active', 'workflow_started'
    FROM unnest(%(definition_ids)s::uuid[], %(notification_ids)s::uuid[],
                %(recipient_ids)s::text[], %(step_ids)s::uuid[])
         AS r (definition_id, notification_id, recipient_id, step_id)
    RETURNING id, notification_id, current_step_id
), transitions AS (
    INSERT INTO chimeway_workflow_transitions (run_id, step_id, from_state, to_state, reason, context)
    SELECT id, current_step_id, NULL::chimeway_run_state, 'active'::chimeway_run_state,
           'workflow_started', '{}'::jsonb
    FROM started
    UNION ALL
    SELECT s.id, s.current_step_id, 'active'::chimeway_run_state, 'active'::chimeway_run_state,
           'step_activated',
           jsonb_build_object('step_key', st.step_key, 'source', 'trigger')
    FROM started s JOIN chimeway_workflow_steps st ON st.id = s.current_step_id
)
SELECT id, notification_id FROM started

-- name: run_get
SELECT * FROM chimeway_workflow_runs WHERE id = %(id)s

-- name: run_lock
-- Locked in id order: two transactions locking overlapping sets cannot deadlock on them.
SELECT * FROM chimeway_workflow_runs WHERE id = ANY(%(ids)s::uuid[]) ORDER BY id FOR UPDATE

-- name: runs_update
-- The one guarded move of runs: each only from its expected state. The transitions that
-- explain the moves (t_*, each naming its move by position) are appended in the same
-- statement, in the order given, each from the state its move left unless it names its
-- own (a move made of two steps: a wait that elapsed and the advance it leads to). Rows
-- come back in input order; a run no longer in its expected state is left out.
WITH m AS (
    SELECT * FROM unnest(
        %(ids)s::uuid[], %(from_states)s::chimeway_run_state[],
        %(to_states)s::chimeway_run_state[], %(status_reasons)s::text[],
        %(status_contexts)b::jsonb[], %(current_step_ids)s::uuid[],
        %(suspended_until)s::timestamptz[], %(pending_signals)b::jsonb[],
        %(terminal_reasons)s::text[]
    ) WITH ORDINALITY AS m (
        id, from_state, to_state, status_reason, status_context, current_step_id,
        suspended_until, pending_signals, terminal_reason, n
    )
), moved AS (
    UPDATE chimeway_workflow_runs r
    SET state = m.to_state,
        status_reason = m.status_reason,
        status_context = m.status_context,
        current_step_id = m.current_step_id,
        suspended_until = m.suspended_until,
        pending_signals = ARRAY(SELECT jsonb_array_elements_text(m.pending_signals)),
        terminal_reason = m.terminal_reason,
        last_transition_at = now()
    FROM m
    -- `= ANY` makes the runs an index lookup whatever the statistics say (a hash join over
    -- a sequential scan was chosen for a freshly filled table).
    WHERE r.id = ANY(%(ids)s::uuid[]) AND r.id = m.id AND r.state = m.from_state
    RETURNING r.*, m.n AS move_n, m.from_state AS move_from
), recorded AS (
    INSERT INTO chimeway_workflow_transitions (
        run_id, step_id, delivery_id, from_state, to_state, reason, context
    )
    SELECT mv.id, t.step_id, t.delivery_id, coalesce(t.from_state, mv.move_from), mv.state,
           t.reason, t.context
    FROM unnest(
        %(t_moves)s::bigint[], %(t_reasons)s::text[], %(t_contexts)b::jsonb[],
        %(t_step_ids)s::uuid[], %(t_delivery_ids)s::uuid[],
        %(t_from_states)s::chimeway_run_state[]
    ) WITH ORDINALITY AS t (move_n, reason, context, step_id, delivery_id, from_state, k)
    JOIN moved mv ON mv.move_n = t.move_n
    ORDER BY t.k
)
SELECT * FROM moved ORDER BY move_n

-- name: transition_append
INSERT INTO chimeway_workflow_transitions (
    run_id, step_id, delivery_id, from_state, to_state, reason, context
)
VALUES (
    %(run_id)s, %(step_id)s, %(delivery_id)s, %(from_state)s, %(to_state)s, %(reason)s,
    %(context)s
)
RETURNING *

-- name: runs_due_fire
-- What the due sweep, a firing worker and a timer's take-along take, in one statement: the
-- due waits (oldest first, through the partial index on suspended_until; SKIP LOCKED lets
-- sweepers share), their timer jobs not started yet deleted (they would only find their
-- runs moved on, and, queued ahead of the deliveries the moves plan, delay them), and the
-- database's clock the due times were read on. A timer job a worker is
-- fetching at this moment is skipped, not waited for: that worker finds its run moved on
-- (it waits for this transaction's run lock), as a job fetched a moment earlier does.
WITH claimed AS (
    SELECT * FROM chimeway_workflow_runs
    WHERE state = 'waiting' AND suspended_until <= coalesce(%(now)s::timestamptz, now())
      AND NOT (id = ANY(%(skip)s::uuid[]))
    ORDER BY suspended_until
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), idle AS (
    DELETE FROM procrastinate_jobs
    WHERE id = ANY(ARRAY(
        SELECT j.id FROM procrastinate_jobs j
        WHERE j.status = 'todo'
          AND j.queueing_lock = ANY(ARRAY(SELECT %(timer_lock)s || id::text FROM claimed))
        FOR UPDATE SKIP LOCKED
    ))
)
SELECT claimed.*, coalesce(%(now)s::timestamptz, now()) AS fired_at
FROM claimed ORDER BY suspended_until

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

-- name: run_explain
SELECT r.id, r.tenant_id, r.state, r.status_reason, st.step_key AS current_step_name,
       r.suspended_until, r.pending_signals, r.terminal_reason, r.status_context,
       d.workflow_key, d.workflow_version, r.recipient_id, r.notification_id,
       r.started_at, r.last_transition_at
FROM chimeway_workflow_runs r
JOIN chimeway_workflow_steps st ON st.id = r.current_step_id
JOIN chimeway_workflow_definitions d ON d.id = r.definition_id
WHERE r.id = %(id)s AND r.tenant_id = %(tenant_id)s

-- name: runs_list
-- A tenant's runs, newest first, optionally of one state and one workflow.
SELECT r.id, r.tenant_id, r.state, r.status_reason, st.step_key AS current_step_name,
       r.suspended_until, r.pending_signals, r.terminal_reason, r.status_context,
       d.workflow_key, d.workflow_version, r.recipient_id, r.notification_id,
       r.started_at, r.last_transition_at
FROM chimeway_workflow_runs r
JOIN chimeway_workflow_steps st ON st.id = r.current_step_id
JOIN chimeway_workflow_definitions d ON d.id = r.definition_id
WHERE r.tenant_id = %(tenant_id)s
  AND (%(state)s::chimeway_run_state IS NULL OR r.state = %(state)s::chimeway_run_state)
  AND (%(workflow_key)s::text IS NULL OR d.workflow_key = %(workflow_key)s)
ORDER BY r.started_at DESC, r.id
LIMIT %(limit)s

-- name: transitions_for_run
-- Tenant-scoped: another tenant's run yields no rows, exactly like a missing one.
SELECT t.id, t.run_id, st.step_key, t.step_id, t.delivery_id, t.from_state, t.to_state,
       t.reason, t.context, t.created_at
FROM chimeway_workflow_transitions t
JOIN chimeway_workflow_runs r ON r.id = t.run_id
LEFT JOIN chimeway_workflow_steps st ON st.id = t.step_id
WHERE t.run_id = %(run_id)s AND r.tenant_id = %(tenant_id)s
ORDER BY t.id
LIMIT %(limit)s

-- name: transitions_for_delivery
SELECT t.id, t.reason, t.from_state, t.to_state, t.context, t.created_at
FROM chimeway_deliveries d
JOIN chimeway_workflow_transitions t ON t.run_id = d.workflow_run_id AND t.delivery_id = d.id
WHERE d.id = %(delivery_id)s AND d.tenant_id = %(tenant_id)s
ORDER BY t.id

-- name: run_delivery_ids
-- A run's deliveries in step order (tenant-scoped).
SELECT d.id FROM chimeway_deliveries d
JOIN chimeway_workflow_steps st ON st.id = d.workflow_step_id
WHERE d.workflow_run_id = %(run_id)s AND d.tenant_id = %(tenant_id)s
ORDER BY st.step_order

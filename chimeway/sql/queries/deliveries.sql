-- Deliveries, their status history and their attempts (chimeway/store/deliveries.py).

-- name: delivery_insert_batch
-- One row per (notification, channel) or per workflow step; each gets its `planned` history
-- (with the evidence of a decision that let it through, such as a critical notifier's
-- bypass of an opt-out). A NULL render_data takes the content the notification rendered for
-- the channel at trigger time (a workflow's later steps). Planning decided each row: a row
-- planning suppressed (a NULL suppression reason plans it pending) gets a second history
-- row, pending -> suppressed, naming the reason; a row it deferred (a next_eligible_at) is
-- pending/deferred until then, with a `deferred` history row. Both keep their evidence.
WITH planned AS (
    INSERT INTO chimeway_deliveries (
        notification_id, tenant_id, recipient_id, channel, render_data, max_attempts,
        workflow_run_id, workflow_step_id, status, suppression_reason, orchestration_state,
        next_eligible_at, planning_reason, planning_context, terminal_at, category,
        workflow_key, critical, bypass_quiet_hours
    )
    SELECT x.notification_id, x.tenant_id, x.recipient_id, x.channel,
           coalesce(
               x.render_data,
               (SELECT n.contents -> x.channel FROM chimeway_notifications n
                WHERE n.id = x.notification_id),
               '{}'::jsonb
           ),
           x.max_attempts, x.run_id, x.step_id,
           CASE WHEN x.suppressed IS NULL THEN 'pending' ELSE 'suppressed' END
               ::chimeway_delivery_status,
           x.suppressed,
           CASE WHEN x.deferred_until IS NULL THEN 'ready' ELSE 'deferred' END
               ::chimeway_orchestration_state,
           x.deferred_until,
           coalesce(x.suppressed::text, x.planning_reason),
           coalesce(x.context, '{}'::jsonb),
           CASE WHEN x.suppressed IS NOT NULL THEN now() END,
           x.category, x.workflow_key, x.critical, x.bypass_quiet_hours
    FROM unnest(
        %(notification_ids)s::uuid[], %(tenant_ids)s::text[], %(recipient_ids)s::text[],
        %(channels)s::text[], %(render_data)b::jsonb[], %(max_attempts)s::int[],
        %(run_ids)s::uuid[], %(step_ids)s::uuid[],
        %(suppression_reasons)s::chimeway_delivery_reason[], %(contexts)b::jsonb[],
        %(deferred_until)s::timestamptz[], %(planning_reasons)s::text[],
        %(categories)s::text[], %(workflow_keys)s::text[], %(criticals)s::boolean[],
        %(bypass_quiet_hours)s::boolean[]
    ) AS x (notification_id, tenant_id, recipient_id, channel, render_data, max_attempts,
            run_id, step_id, suppressed, context, deferred_until, planning_reason, category,
            workflow_key, critical, bypass_quiet_hours)
    ON CONFLICT DO NOTHING
    RETURNING id, notification_id, channel, workflow_run_id, status, suppression_reason,
              orchestration_state, next_eligible_at, planning_context
), history AS (
    INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason, context)
    SELECT id, NULL::chimeway_delivery_status, 'pending'::chimeway_delivery_status, 'planned',
           CASE WHEN status = 'pending' AND orchestration_state = 'ready'
                THEN planning_context ELSE '{}'::jsonb END
    FROM planned
    UNION ALL
    SELECT id, 'pending', status, suppression_reason::text, planning_context
    FROM planned WHERE status <> 'pending'
    UNION ALL
    SELECT id, 'pending', 'pending', 'deferred', planning_context
    FROM planned WHERE status = 'pending' AND orchestration_state = 'deferred'
), pending AS (
    SELECT id, next_eligible_at AS at,
           row_number() OVER (PARTITION BY next_eligible_at) AS n
    FROM planned WHERE status = 'pending'
), jobs AS (
    -- The jobs that send the pending ones, built here like store/jobs.py's defers: one
    -- `deliver` job with its queueing lock per delivery when `chunk` is 1, else one
    -- `deliver_many` job per `chunk` deliveries due at the same instant (now, or the end of
    -- a deferral). Skipped when `defer` is false.
    SELECT procrastinate_defer_jobs_v1(array_agg(
        ROW(%(queue)s,
            CASE WHEN %(chunk)s = 1 THEN %(task_one)s ELSE %(task_many)s END,
            0, NULL,
            CASE WHEN %(chunk)s = 1 THEN %(lock_prefix)s || g.ids[1]::text END,
            CASE WHEN %(chunk)s = 1 THEN jsonb_build_object('delivery_id', g.ids[1]::text)
                 ELSE jsonb_build_object('delivery_ids', to_jsonb(g.ids::text[])) END,
            g.at
        )::procrastinate_job_to_defer_v1 ORDER BY g.at NULLS FIRST, g.k
    )) AS job_ids
    FROM (
        SELECT at, (n - 1) / %(chunk)s AS k, array_agg(id ORDER BY n) AS ids
        FROM pending GROUP BY 1, 2
    ) AS g
    WHERE %(defer)s
    HAVING count(*) > 0
)
SELECT p.id, p.notification_id, p.channel, p.workflow_run_id, p.status,
       p.orchestration_state, p.next_eligible_at, (SELECT count(*) FROM jobs) AS deferred
FROM planned p

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
-- (in id order) and move each that may be sent now to `dispatched`, held by `claimant`, with
-- its history row. Sendable: ready, and pending, or failed with its retry due, or dispatched
-- by a claimant that has not beaten for `stuck_after` (counted from the latest of the claim,
-- its last beat and the start of the claiming process's own unbroken run of beats, so that
-- nobody is presumed dead because the database was away). Such a takeover first records the
-- lost send as an `interrupted` attempt (so numbers stay contiguous and the adapter sees the
-- real one), and after `max_takeovers` takeovers the delivery is cancelled as `abandoned`
-- instead: the dead-letter end. Each row as it was comes back either way (`was_*`), with the
-- moved row's columns when it moved, on the database's clock; a missing id, no row.
-- Unless `policy_checked` (policy already let these through), a send that policy could stop
-- is not claimed but comes back with `needs_policy` (engine/deliver.py asks policy, then
-- claims with `policy_checked`): a pending or retrying delivery any policy can apply to
-- (chimeway_policy_scope, inlined), a send on a channel with a throttle (`throttled`), a deferred
-- delivery now due.
-- `notes` (delivery id -> JSON object) adds evidence to a claim's history row: policy's
-- evidence for letting it through (a critical notifier's bypass of an opt-out).
-- The recipient's profile comes back with a dispatched delivery, for the adapter.
-- A delivery dispatched by `claimant` itself is `orphaned` (a claimant never claims what one
-- of its calls holds: engine/liveness.py): its claim committed but the reply was lost, so
-- the claimant never sent it; it is claimed again at once (a new start, no attempt and no
-- takeover spent).
WITH previous AS (
    SELECT d.id, d.status, d.orchestration_state, d.retry_at, d.takeovers,
           d.status_changed_at AS was_changed_at,
           -- A claimant still registered must also have stopped beating; one that left
           -- (or never registered: a claim made inside a test's transaction) needs only
           -- the claim to be that old.
           CASE WHEN c.id IS NULL THEN d.status_changed_at
                ELSE greatest(d.status_changed_at, c.beat_at, me.alive_since)
           END + %(stuck_after)s::interval AS takeover_at,
           (SELECT count(*) FROM chimeway_delivery_attempts a WHERE a.delivery_id = d.id)
               AS attempts,
           d.status = 'pending' AND d.orchestration_state = 'deferred'
               AND d.next_eligible_at <= now() AS due_deferred,
           d.status = 'dispatched' AND %(claimant)s::uuid IS NOT NULL
               AND d.claimed_by IS NOT DISTINCT FROM %(claimant)s::uuid AS orphaned,
           %(policy_checked)s OR (
               d.channel <> ALL(%(throttled)s::text[])
               AND (d.status NOT IN ('pending', 'failed')
                    OR NOT (SELECT s.applies FROM chimeway_policy_scope(
                        d.tenant_id, d.recipient_id, d.channel, d.category, d.workflow_key)
                        AS s))
           ) AS let_through
    FROM chimeway_deliveries d
    LEFT JOIN chimeway_processes c ON c.id = d.claimed_by
    LEFT JOIN chimeway_processes me ON me.id = %(claimant)s::uuid
    WHERE d.id = ANY(%(ids)s::uuid[])
    ORDER BY d.id
    FOR UPDATE OF d
), due AS (
    SELECT p.*, p.status = 'dispatched' AND NOT p.orphaned AS takeover,
           p.status = 'dispatched' AND NOT p.orphaned AND p.takeovers >= %(max_takeovers)s
               AS abandon
    FROM previous p
    WHERE p.orchestration_state = 'ready'
      AND p.status = ANY(%(from_statuses)s::chimeway_delivery_status[])
      AND (p.status = 'pending'
           OR (p.status = 'failed' AND (p.retry_at IS NULL OR p.retry_at <= now()))
           OR (p.status = 'dispatched' AND (p.takeover_at <= now() OR p.orphaned)))
), sendable AS (
    SELECT * FROM due WHERE let_through
), moved AS (
    UPDATE chimeway_deliveries d
    SET status = CASE WHEN s.abandon THEN 'cancelled' ELSE 'dispatched' END
            ::chimeway_delivery_status,
        suppression_reason = CASE WHEN s.abandon THEN 'abandoned' END
            ::chimeway_delivery_reason,
        retry_at = NULL,
        updated_at = now(),
        status_changed_at = now(),
        terminal_at = CASE WHEN s.abandon THEN now() END,
        claimed_by = CASE WHEN s.abandon THEN NULL ELSE %(claimant)s::uuid END,
        takeovers = d.takeovers + (s.takeover AND NOT s.abandon)::int
    FROM sendable s
    WHERE d.id = ANY(%(ids)s::uuid[]) AND d.id = s.id
    RETURNING d.*
), interrupted AS (
    INSERT INTO chimeway_delivery_attempts (
        delivery_id, attempt_number, outcome, error_class, error, started_at
    )
    SELECT s.id, s.attempts + 1, 'failed', 'unknown', %(interrupted)s, s.was_changed_at
    FROM sendable s WHERE s.takeover
), history AS (
    INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason, context)
    SELECT m.id, s.status, m.status,
           CASE WHEN s.abandon THEN 'abandoned_after_interruptions'
                WHEN s.takeover THEN 'redispatched_after_interruption'
                WHEN s.orphaned THEN 'redispatched_after_lost_claim'
                ELSE 'dispatched' END,
           CASE WHEN s.takeover THEN jsonb_build_object('takeovers', m.takeovers)
                ELSE '{}'::jsonb END
               || coalesce(%(notes)b::jsonb -> m.id::text, '{}'::jsonb)
    FROM moved m JOIN sendable s ON s.id = m.id
), follow_up AS (
    -- An abandoned delivery's run must move on (its `retries_exhausted` branch): a `progress`
    -- job for it, in this statement, so a claimant that dies before it moves the run itself
    -- (engine/deliver.py) cannot leave the run active for ever.
    SELECT procrastinate_defer_jobs_v1(array_agg(ROW(%(progress_queue)s, %(progress_task)s,
        0, NULL, NULL, jsonb_build_object('run_id', m.workflow_run_id),
        NULL)::procrastinate_job_to_defer_v1))
    FROM moved m
    WHERE m.status = 'cancelled' AND m.workflow_run_id IS NOT NULL
    HAVING count(*) > 0
)
SELECT p.status AS was_status, p.orchestration_state AS was_orchestration_state,
       p.retry_at AS was_retry_at, p.takeover_at, now() AS db_now,
       -- Read so that it runs: a CTE that only SELECTs is skipped unless read.
       (SELECT count(*) FROM follow_up) AS follow_ups,
       (u.id IS NOT NULL AND NOT p.let_through) OR (p.due_deferred AND NOT %(policy_checked)s)
           AS needs_policy,
       p.attempts + coalesce(s.takeover::int, 0) AS attempts,
       p.id AS claimed_id, m.id IS NOT NULL AS moved, m.*,
       -- The recipient's profile as the directory holds it now, for the adapter.
       r.recipient_id IS NOT NULL AS has_profile, r.email AS profile_email,
       r.phone AS profile_phone, r.locale AS profile_locale, r.timezone AS profile_timezone,
       r.data AS profile_data
FROM previous p
LEFT JOIN due u ON u.id = p.id
LEFT JOIN sendable s ON s.id = p.id
LEFT JOIN moved m ON m.id = p.id
LEFT JOIN chimeway_recipients r
       ON m.status = 'dispatched' AND r.tenant_id = m.tenant_id AND r.recipient_id = m.recipient_id

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
       d.orchestration_state, d.next_eligible_at, d.planning_reason, d.planning_context,
       d.category, d.workflow_key, d.critical, d.retry_at,
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
    WHERE orchestration_state = 'deferred' AND next_eligible_at <= now() AND status = 'pending'
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
-- claim is old (the claim decides whether their claimant stopped): each needs a deliver job
-- again. Found among the open deliveries created before the shorter of the two ages (a
-- delivery is never older in its status than since it was created), through the open
-- index. The queued chunks' ids are listed once and hashed (a probe into every job's
-- arguments per delivery took 18 s for 500 deliveries behind 10,000 queued chunks); with no
-- candidate they are not read at all.
WITH queued AS MATERIALIZED (
    SELECT x.id::uuid AS id
    FROM procrastinate_jobs j
    CROSS JOIN LATERAL jsonb_array_elements_text(j.args -> 'delivery_ids') AS x (id)
    WHERE j.task_name = 'chimeway:deliver_many' AND j.status = 'todo'
)
SELECT d.id FROM chimeway_deliveries d
WHERE d.terminal_at IS NULL
  AND d.created_at < now() - least(%(pending_after)s::interval, %(dispatched_after)s::interval)
  AND d.orchestration_state = 'ready'
  AND (
      (d.status = 'pending' AND d.status_changed_at < now() - %(pending_after)s::interval
       AND NOT EXISTS (SELECT 1 FROM queued q WHERE q.id = d.id))
      OR (d.status = 'dispatched'
          AND d.status_changed_at < now() - %(dispatched_after)s::interval)
      OR (d.status = 'failed' AND d.retry_at < now() - %(pending_after)s::interval)
  )
ORDER BY d.created_at
LIMIT %(limit)s

-- name: deliveries_waiting_by_channel
-- Deliveries that a worker will still send (pending, being sent, or failed and retrying), by
-- channel: a worker refuses to start while one of these channels has no adapter.
SELECT channel, count(*) AS waiting FROM chimeway_deliveries
WHERE status IN ('pending', 'dispatched', 'failed')
GROUP BY channel
ORDER BY channel

-- name: deliveries_release
-- The claimant gives up its hold on dispatched deliveries it cannot record: another process
-- may take them over once their claim is `stuck_after` old.
UPDATE chimeway_deliveries SET claimed_by = NULL
WHERE id = ANY(%(ids)s::uuid[]) AND status = 'dispatched' AND claimed_by = %(claimant)s

-- name: delivery_record
-- The record, as one statement for any number of sends: lock the deliveries (in id order),
-- append each send's attempt (numbered under the lock), and move each delivery that is still
-- dispatched for this very attempt (its attempt count is the one its claim saw; a takeover
-- since then means it is someone else's now) to the status the outcome gives, with its
-- history: the record form of the guarded transition, along edges ALLOWED from
-- `dispatched` (succeeded, failed, cancelled; exhausted retries write dispatched -> failed
-- -> cancelled). A send whose delivery moved on keeps its attempt as evidence and changes
-- nothing else. A sent in-app delivery also puts its notification in the inbox. One row per
-- send, in input order, with the delivery as it was and, when it moved, as it is now.
-- A record made again after its first commit's reply was lost (the worker cannot tell a
-- lost write from a lost reply) finds its own attempt already there (same claim start,
-- outcome and provider data: a takeover's `interrupted` attempt shares only the start) and
-- is a no-op, `replayed`: never a second attempt or move.
WITH x AS (
    SELECT * FROM unnest(
        %(ids)s::uuid[], %(numbers)s::int[], %(outcomes)s::chimeway_attempt_outcome[],
        %(error_classes)s::chimeway_error_class[], %(errors)s::text[],
        %(provider_message_ids)s::text[], %(responses)b::jsonb[], %(started_at)s::timestamptz[],
        %(to_statuses)s::chimeway_delivery_status[], %(reasons)s::text[],
        %(suppression_reasons)s::chimeway_delivery_reason[], %(retry_delays)s::interval[],
        %(exhausted)s::boolean[], %(contexts)b::jsonb[]
    ) WITH ORDINALITY AS x (
        id, number, outcome, error_class, error, provider_message_id, response, started_at,
        to_status, reason, suppression_reason, retry_delay, exhausted, context, n
    )
), locked AS (
    SELECT d.id, d.status,
           (SELECT coalesce(max(a.attempt_number), 0) FROM chimeway_delivery_attempts a
            WHERE a.delivery_id = d.id) AS attempts
    FROM chimeway_deliveries d
    WHERE d.id = ANY(%(ids)s::uuid[])
    ORDER BY d.id
    FOR UPDATE
), replayed AS (
    -- (A record the delivery still waits for is never a replay: its attempt is not there.)
    SELECT x.id FROM x JOIN locked l ON l.id = x.id
    WHERE NOT (l.status = 'dispatched' AND l.attempts + 1 = x.number)
      AND EXISTS (
        SELECT FROM chimeway_delivery_attempts a
        WHERE a.delivery_id = x.id AND a.started_at = x.started_at AND a.outcome = x.outcome
          AND a.error_class IS NOT DISTINCT FROM x.error_class
          AND a.error IS NOT DISTINCT FROM x.error
          AND a.provider_message_id IS NOT DISTINCT FROM x.provider_message_id
    )
), appended AS (
    INSERT INTO chimeway_delivery_attempts (
        delivery_id, attempt_number, outcome, error_class, error, provider_message_id,
        provider_response, started_at
    )
    SELECT x.id, l.attempts + 1, x.outcome, x.error_class, x.error, x.provider_message_id,
           x.response, x.started_at
    FROM x JOIN locked l ON l.id = x.id
    WHERE x.id NOT IN (SELECT id FROM replayed)
    RETURNING delivery_id, attempt_number, outcome, error_class
), ours AS (
    SELECT x.* FROM x JOIN locked l ON l.id = x.id
    WHERE l.status = 'dispatched' AND l.attempts + 1 = x.number
), moved AS (
    UPDATE chimeway_deliveries d
    SET status = o.to_status,
        suppression_reason = o.suppression_reason,
        retry_at = now() + o.retry_delay,
        provider_message_id = CASE WHEN o.to_status = 'succeeded' THEN o.provider_message_id
                                   ELSE d.provider_message_id END,
        updated_at = now(),
        status_changed_at = now(),
        terminal_at = CASE WHEN o.to_status IN ('succeeded', 'cancelled') THEN now() END,
        claimed_by = NULL
    FROM ours o
    WHERE d.id = ANY(%(ids)s::uuid[]) AND d.id = o.id
    RETURNING d.*, o.n AS move_n, o.reason AS move_reason, o.context AS move_context,
              o.exhausted AS move_exhausted
), history AS (
    INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason, context)
    SELECT id, 'dispatched'::chimeway_delivery_status,
           CASE WHEN move_exhausted THEN 'failed'::chimeway_delivery_status ELSE status END,
           CASE WHEN move_exhausted THEN 'temporary_failure' ELSE move_reason END,
           move_context
    FROM moved
    UNION ALL
    SELECT id, 'failed', status, move_reason, move_context FROM moved WHERE move_exhausted
), entered AS (
    -- An in-app delivery that was sent puts its notification in its recipient's inbox (the
    -- first time only) ...
    UPDATE chimeway_notifications n
    SET inbox_at = now()
    FROM moved m
    WHERE m.channel = 'in_app' AND m.status = 'succeeded'
      AND n.id = m.notification_id AND n.inbox_at IS NULL
    RETURNING n.id, n.tenant_id, n.recipient_id
), announced AS (
    -- ... and wakes the open inbox streams at commit: an `item` payload with the inbox's
    -- routing key, as chimeway/engine/inbox.py makes them (ids only, never content).
    SELECT count(pg_notify(
        'chimeway_inbox',
        'item ' || left(md5(e.tenant_id || chr(31) || e.recipient_id), 16) || ' ' || e.id
    )) AS n
    FROM entered e
)
SELECT x.n AS input_n, x.id AS input_id, l.status AS was_status,
       a.attempt_number AS recorded_number, a.outcome AS recorded_outcome,
       a.error_class AS recorded_error_class, (SELECT n FROM announced) AS announced,
       x.id IN (SELECT id FROM replayed) AS replayed, m.id IS NOT NULL AS moved, m.*
FROM x
LEFT JOIN locked l ON l.id = x.id
LEFT JOIN appended a ON a.delivery_id = x.id
LEFT JOIN moved m ON m.id = x.id
ORDER BY x.n

-- name: deliveries_hold
-- Policy holds deliveries until an instant (quiet hours, a throttle): a pending one becomes
-- deferred until then, a failed one has its retry moved there; each with a `deferred`
-- history row keeping the evidence. Rows in another status are left alone; the held ids
-- come back.
WITH h AS (
    SELECT * FROM unnest(
        %(ids)s::uuid[], %(until)s::timestamptz[], %(reasons)s::text[], %(contexts)b::jsonb[]
    ) AS h (id, until, reason, context)
), held AS (
    UPDATE chimeway_deliveries d
    SET orchestration_state = CASE WHEN d.status = 'pending' THEN 'deferred'
                                   ELSE d.orchestration_state END,
        next_eligible_at = CASE WHEN d.status = 'pending' THEN h.until
                                ELSE d.next_eligible_at END,
        retry_at = CASE WHEN d.status = 'failed' THEN h.until ELSE d.retry_at END,
        planning_reason = h.reason,
        planning_context = h.context,
        updated_at = now()
    FROM h
    WHERE d.id = h.id AND d.status IN ('pending', 'failed')
    RETURNING d.id, d.status, h.context
), history AS (
    INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason, context)
    SELECT id, status, status, 'deferred', context FROM held
)
SELECT id FROM held

-- name: deliveries_resume
-- Deferred deliveries policy lets go now become ready (history row included); the resumed ids.
WITH resumed AS (
    UPDATE chimeway_deliveries
    SET orchestration_state = 'ready', updated_at = now()
    WHERE id = ANY(%(ids)s::uuid[]) AND status = 'pending' AND orchestration_state = 'deferred'
    RETURNING id
), history AS (
    INSERT INTO chimeway_delivery_transitions (delivery_id, from_status, to_status, reason)
    SELECT id, 'pending', 'pending', 'resumed_from_deferral' FROM resumed
)
SELECT id FROM resumed

-- name: deliveries_find_recipient
-- An operator's lookup: a tenant's deliveries to one recipient, newest first, optionally of
-- one status (through the recipient index).
SELECT d.id AS delivery_id, d.tenant_id, e.id AS event_id, e.notification_key,
       e.idempotency_key, e.correlation_id, d.recipient_id, d.channel, d.status,
       d.suppression_reason, d.workflow_run_id, d.created_at, d.status_changed_at
FROM chimeway_deliveries d
JOIN chimeway_notifications n ON n.id = d.notification_id
JOIN chimeway_events e ON e.id = n.event_id
WHERE d.tenant_id = %(tenant_id)s AND d.recipient_id = %(recipient_id)s
  AND (%(status)s::chimeway_delivery_status IS NULL OR d.status = %(status)s)
ORDER BY d.created_at DESC, d.id DESC
LIMIT %(limit)s

-- name: deliveries_find_idempotency_key
-- The deliveries of the tenant's event with this idempotency key (its unique index).
SELECT d.id AS delivery_id, d.tenant_id, e.id AS event_id, e.notification_key,
       e.idempotency_key, e.correlation_id, d.recipient_id, d.channel, d.status,
       d.suppression_reason, d.workflow_run_id, d.created_at, d.status_changed_at
FROM chimeway_events e
JOIN chimeway_notifications n ON n.event_id = e.id
JOIN chimeway_deliveries d ON d.notification_id = n.id
WHERE e.tenant_id = %(tenant_id)s AND e.idempotency_key = %(idempotency_key)s
  AND (%(status)s::chimeway_delivery_status IS NULL OR d.status = %(status)s)
ORDER BY d.created_at DESC, d.id DESC
LIMIT %(limit)s

-- name: deliveries_find_correlation_id
-- The deliveries of the tenant's events carrying this correlation id (its partial index).
SELECT d.id AS delivery_id, d.tenant_id, e.id AS event_id, e.notification_key,
       e.idempotency_key, e.correlation_id, d.recipient_id, d.channel, d.status,
       d.suppression_reason, d.workflow_run_id, d.created_at, d.status_changed_at
FROM chimeway_events e
JOIN chimeway_notifications n ON n.event_id = e.id
JOIN chimeway_deliveries d ON d.notification_id = n.id
WHERE e.tenant_id = %(tenant_id)s AND e.correlation_id = %(correlation_id)s
  AND (%(status)s::chimeway_delivery_status IS NULL OR d.status = %(status)s)
ORDER BY d.created_at DESC, d.id DESC
LIMIT %(limit)s

-- name: deliveries_find_tenant
-- A tenant's latest deliveries, optionally of one status.
SELECT d.id AS delivery_id, d.tenant_id, e.id AS event_id, e.notification_key,
       e.idempotency_key, e.correlation_id, d.recipient_id, d.channel, d.status,
       d.suppression_reason, d.workflow_run_id, d.created_at, d.status_changed_at
FROM chimeway_deliveries d
JOIN chimeway_notifications n ON n.id = d.notification_id
JOIN chimeway_events e ON e.id = n.event_id
WHERE d.tenant_id = %(tenant_id)s
  AND (%(status)s::chimeway_delivery_status IS NULL OR d.status = %(status)s)
ORDER BY d.created_at DESC, d.id DESC
LIMIT %(limit)s

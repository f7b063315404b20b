-- Signals (chimeway/store/signals.py).

-- name: signal_insert
-- A repeated idempotency key (per tenant) returns no row: the signal is inert.
INSERT INTO chimeway_signals (tenant_id, actor_id, event_name, payload, idempotency_key)
VALUES (%(tenant_id)s, %(actor_id)s, %(event_name)s, %(payload)s, %(idempotency_key)s)
ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id

-- name: signal_insert_with_job
-- The signal and the job that routes it, in one statement (built as jobs_defer_per_id
-- builds them: Procrastinate's own defer function, the queueing lock <lock_prefix><id> by
-- which a batch that routed the signal first finds the job and deletes it). A repeated
-- idempotency key returns no row and defers nothing.
WITH s AS (
    INSERT INTO chimeway_signals (tenant_id, actor_id, event_name, payload, idempotency_key)
    VALUES (%(tenant_id)s, %(actor_id)s, %(event_name)s, %(payload)s, %(idempotency_key)s)
    ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT s.id, procrastinate_defer_jobs_v1(ARRAY[
    ROW(%(queue)s, %(task)s, %(priority)s, NULL, %(lock_prefix)s || s.id::text,
        jsonb_build_object('signal_id', s.id::text), NULL)::procrastinate_job_to_defer_v1
])
FROM s

-- name: signal_find_by_key
SELECT id FROM chimeway_signals
WHERE tenant_id = %(tenant_id)s AND idempotency_key = %(idempotency_key)s

-- name: signal_lock
SELECT id, tenant_id, actor_id, event_name, payload, routed_at, created_at
FROM chimeway_signals WHERE id = %(id)s FOR UPDATE

-- name: signals_pending_lock
-- Other signals not routed yet, oldest first, that no other router holds: a routing job takes
-- them along (chimeway_signals_pending_idx).
SELECT id, tenant_id, actor_id, event_name, payload, routed_at, created_at
FROM chimeway_signals
WHERE routed_at IS NULL AND id <> %(id)s
ORDER BY created_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: signals_waiting_runs_lock
-- The waiting runs of these tenants' actors that listen for one of these events, locked in id
-- order (lock order: signals, then runs, then deliveries). Which signal resumes which run is
-- decided by the caller, oldest signal first.
SELECT r.* FROM chimeway_workflow_runs r
JOIN (
    SELECT DISTINCT a.tenant_id, a.actor_id
    FROM unnest(%(tenant_ids)s::text[], %(actor_ids)s::text[]) AS a (tenant_id, actor_id)
) a ON r.tenant_id = a.tenant_id AND r.recipient_id = a.actor_id
WHERE r.suspended_until IS NOT NULL  -- waiting (the partial index's predicate)
  AND r.state = 'waiting' AND r.pending_signals && %(events)s::text[]
ORDER BY r.id
FOR UPDATE OF r

-- name: signals_delivery_ids
-- Of the (tenant, delivery id) pairs a signal payload names, the deliveries that exist.
SELECT d.tenant_id, d.id FROM chimeway_deliveries d
JOIN unnest(%(tenant_ids)s::text[], %(ids)s::uuid[]) AS c (tenant_id, id)
  ON d.id = c.id AND d.tenant_id = c.tenant_id

-- name: signals_mark_routed
UPDATE chimeway_signals SET routed_at = now() WHERE id = ANY(%(ids)s::uuid[])

-- name: signals_seen_since
-- For each run starting a wait (by position n): the earliest signal from its recipient for
-- one of its events that arrived since its step began (before its wait); runs with none are
-- left out.
SELECT w.n, s.event_name
FROM unnest(
    %(tenant_ids)s::text[], %(actor_ids)s::text[], %(events)b::jsonb[],
    %(since)s::timestamptz[]
) WITH ORDINALITY AS w (tenant_id, actor_id, events, since, n)
CROSS JOIN LATERAL (
    SELECT g.event_name FROM chimeway_signals g
    WHERE g.tenant_id = w.tenant_id AND g.actor_id = w.actor_id
      AND g.event_name = ANY(ARRAY(SELECT jsonb_array_elements_text(w.events)))
      AND g.created_at >= w.since
    ORDER BY g.created_at
    LIMIT 1
) AS s

-- name: signals_insert_many
-- Several signals of one actor in one statement; those whose idempotency key (per tenant)
-- was seen before are inert and left out. The new ids come back.
INSERT INTO chimeway_signals (tenant_id, actor_id, event_name, payload, idempotency_key)
SELECT %(tenant_id)s, %(actor_id)s, x.event_name, x.payload, x.idempotency_key
FROM unnest(%(event_names)s::text[], %(payloads)b::jsonb[], %(idempotency_keys)s::text[])
    AS x (event_name, payload, idempotency_key)
ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id

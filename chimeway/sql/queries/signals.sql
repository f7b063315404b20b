-- Signals (chimeway/store/signals.py).

-- name: signal_insert
-- A repeated idempotency key (per tenant) returns no row: the signal is inert.
INSERT INTO chimeway_signals (tenant_id, actor_id, event_name, payload, idempotency_key)
VALUES (%(tenant_id)s, %(actor_id)s, %(event_name)s, %(payload)s, %(idempotency_key)s)
ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id

-- name: signal_find_by_key
SELECT id FROM chimeway_signals
WHERE tenant_id = %(tenant_id)s AND idempotency_key = %(idempotency_key)s

-- name: signal_lock
SELECT id, tenant_id, actor_id, event_name, payload, routed_at
FROM chimeway_signals WHERE id = %(id)s FOR UPDATE

-- name: signal_mark_routed
UPDATE chimeway_signals SET routed_at = now() WHERE id = %(id)s

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

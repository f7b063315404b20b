-- Events and their notifications, written by a trigger (chimeway/store/events.py).

-- name: event_insert
-- Idempotent per (tenant, key): a duplicate (even a concurrent one) returns no row.
INSERT INTO chimeway_events (
    tenant_id, notification_key, notification_version, idempotency_key, correlation_id, payload,
    traceparent
)
VALUES (
    %(tenant_id)s, %(notification_key)s, %(notification_version)s, %(idempotency_key)s,
    %(correlation_id)s, %(payload)s, %(traceparent)s
)
ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
RETURNING id

-- name: event_find
SELECT id FROM chimeway_events
WHERE tenant_id = %(tenant_id)s AND idempotency_key = %(idempotency_key)s

-- name: notification_insert_batch
INSERT INTO chimeway_notifications (
    event_id, tenant_id, recipient_id, recipient_type, category, assigns, contents
)
SELECT %(event_id)s, %(tenant_id)s, r.recipient_id, r.recipient_type, %(category)s,
       r.assigns, r.contents
FROM unnest(
    %(recipient_ids)s::text[], %(recipient_types)s::text[], %(assigns)b::jsonb[],
    %(contents)b::jsonb[]
) AS r (recipient_id, recipient_type, assigns, contents)
RETURNING id, recipient_id
